"""Tests are written once and run on every backend: ``backend`` is parametrized over numpy,
emulator and cuda; a backend that is not available here is skipped with the reason."""
from __future__ import annotations

import os

import numpy as np
import pytest

from pygpu_ops._runtime import backends, sources

# The bench's pause before each block of timed calls (bench.CpuTimer) is for real measurements;
# the tests that run the bench check its rows, not its timings.
os.environ.setdefault("PYGPU_OPS_BENCH_SETTLE", "0")


def _param(name):
    marks = [pytest.mark.gpu] if name == "cuda" else [pytest.mark.emulator] if name == "emulator" else []
    return pytest.param(name, id=name, marks=marks)


# "fakecuda": the cuda backend's own code (CudaDevice, CuPy-array strides, in-place out=) driven
# through a fake CuPy module whose kernels run on the emulator; used where no GPU is present.
FAKE = "fakecuda"
ALL_BACKENDS = [_param(n) for n in backends.BACKENDS] + [pytest.param(FAKE, id=FAKE, marks=pytest.mark.emulator)]
DEVICE_BACKENDS = [_param(n) for n in ("emulator", "cuda")] + [pytest.param(FAKE, id=FAKE, marks=pytest.mark.emulator)]


@pytest.fixture
def fake_cupy(monkeypatch, tmp_path_factory):
    """CuPy replaced, for one test, by tests/_runtime/fake_cupy.py (its kernels on the emulator).
    Its compiled "cubins" go to a cache shared by the session's tests, not the user's."""
    import sys

    from pygpu_ops._runtime import device

    if backends.problem("emulator") is not None:
        pytest.skip(f"the fake CuPy needs the emulator: {backends.problem('emulator')}")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "_runtime"))
    import fake_cupy as module

    sys.path.pop(0)
    fake = module.make()
    cubins = tmp_path_factory.getbasetemp() / "cubin-cache"
    monkeypatch.setenv("PYGPU_OPS_CUBIN_CACHE", str(cubins))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backends, "_problems", {})
    device.get_device.cache_clear()
    yield fake
    device.get_device.cache_clear()


def _select(request):
    name = request.param
    if name == FAKE:
        if backends.problem("cuda") is None:
            pytest.skip("a real GPU is present: the cuda tests cover this path")
        request.getfixturevalue("fake_cupy")
        return "cuda"
    why = backends.problem(name)
    if why is not None:
        pytest.skip(f"backend {name!r} unavailable: {why}")
    return name


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    return _select(request)


@pytest.fixture(params=DEVICE_BACKENDS)
def device_backend(request):
    return _select(request)


@pytest.fixture(params=[_param(n) for n in ("numpy", "emulator")])
def host_backend(request):
    """The backends that take host arrays (for inputs only NumPy has, such as ``np.matrix``)."""
    return _select(request)


def np_matrix(data, dtype=np.float32):
    """A ``numpy.matrix`` (deprecated by NumPy, still met in user code), without the warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(data, dtype=dtype)


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


@pytest.fixture
def cuda_dir(tmp_path, monkeypatch):
    """A scratch cuda_src/ for kernels written by the test."""
    monkeypatch.setattr(sources, "cuda_src_dir", lambda: tmp_path)
    sources.expand.cache_clear()
    yield tmp_path
    sources.expand.cache_clear()
