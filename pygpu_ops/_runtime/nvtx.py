"""NVTX ranges, domain ``pygpu_ops``, named ``op:variant``; ranges are off where ``nvtx`` is missing."""
from __future__ import annotations

import contextlib

DOMAIN = "pygpu_ops"
_annotate = None


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
        return contextlib.nullcontext()
    return _annotate(message=f"{op}:{variant}", domain=DOMAIN)
