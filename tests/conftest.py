"""Tests are written once and run on every backend: ``backend`` is parametrized over numpy,
emulator and cuda; a backend that is not available here is skipped with the reason."""
from __future__ import annotations

import numpy as np
import pytest

from pygpu_ops._runtime import backends


def _param(name):
    marks = [pytest.mark.gpu] if name == "cuda" else [pytest.mark.emulator] if name == "emulator" else []
    return pytest.param(name, id=name, marks=marks)


ALL_BACKENDS = [_param(n) for n in backends.BACKENDS]
DEVICE_BACKENDS = [_param(n) for n in ("emulator", "cuda")]


def _skip_unavailable(name):
    why = backends.problem(name)
    if why is not None:
        pytest.skip(f"backend {name!r} unavailable: {why}")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    _skip_unavailable(request.param)
    return request.param


@pytest.fixture(params=DEVICE_BACKENDS)
def device_backend(request):
    _skip_unavailable(request.param)
    return request.param


class Arrays:
    """Moves NumPy test data to the backend's array kind and results back."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, x):
        if self.backend == "cuda":
            import cupy

            return cupy.asarray(x)
        return x

    @staticmethod
    def host(x):
        return x.get() if hasattr(x, "get") else np.asarray(x)


@pytest.fixture
def to(backend):
    return Arrays(backend)


def assert_close_bound(got, want, bound, what=""):
    """|got - want| <= bound elementwise; NaN must match NaN (NaN positions identical)."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    assert (nan_got == nan_want).all(), f"{what}: NaN at {np.argwhere(nan_got != nan_want)[:5].tolist()}"
    ok = nan_want | (got == want) | (np.abs(got - want) <= bound)
    if not ok.all():
        idx = tuple(np.argwhere(~ok)[0])
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} elements off; first at {idx}: "
                             f"got {got[idx]!r}, want {want[idx]!r}, bound {np.broadcast_to(bound, want.shape)[idx]!r}")
