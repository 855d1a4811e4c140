"""NVTX ranges, domain ``pygpu_ops``, named ``op:variant``; ranges are off where ``nvtx`` is missing."""
from __future__ import annotations

import contextlib
import functools

DOMAIN = "pygpu_ops"
_annotate = None
_OFF = contextlib.nullcontext()


def op_range(op: str, variant: str):
    """Context manager marking one op call for Nsight Systems / Nsight Compute (``--nvtx``)."""
    global _annotate
    if _annotate is None:
        try:
            import nvtx

            _annotate = nvtx.annotate
        except ImportError:
            _annotate = False
    if not _annotate:
        return _OFF
    return _range(op, variant)


@functools.lru_cache(maxsize=1024)
def _range(op: str, variant: str):
    """One ``nvtx.annotate`` per name, reused: it holds only the domain and the event attributes
    (no payload), its enter pushes and its exit pops, so a call builds nothing (building one cost
    ~1 us a call on the 2-core test machine, a tenth of a small op's Python side)."""
    return _annotate(message=f"{op}:{variant}", domain=DOMAIN)
