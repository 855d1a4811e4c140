"""Performance analysis without a GPU: emulator memory counters, SASS statistics, occupancy and a modeled time."""
