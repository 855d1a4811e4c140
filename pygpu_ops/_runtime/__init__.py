"""The runtime: kernel sources and registry, backend dispatch, launching (CUDA and emulator)."""
