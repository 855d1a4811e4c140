"""relu / leaky_relu on every backend against plain float64 formulas written here."""
from __future__ import annotations

import numpy as np
import pytest

from pygpu_ops import activations as act

# Empty, single element, below one 16-byte vector, vector + tail, primes, several blocks.
SIZES = [0, 1, 3, 4, 5, 17, 1021, 4099]


def ref_relu(x):
    x64 = x.astype(np.float64)
    return np.where(np.isnan(x64), x64, np.where(x64 < 0, 0.0, x64))


def ref_leaky(x, slope):
    """The slope is taken in x's dtype (as PyTorch); the product of two floats of that dtype is
    exact in float64 (float32), so rounding it to x's dtype gives the correctly rounded result."""
    x64 = x.astype(np.float64)
    s = np.float64(x.dtype.type(slope))
    with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in PyTorch
        y = np.where(np.isnan(x64), x64, np.where(x64 < 0, s * x64, x64))
    return y.astype(x.dtype).astype(np.float64)


def data(n, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-30], dtype)
    x[:min(n, 6)] = special[:min(n, 6)]
    return x


def check_equal(got, want):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    assert (np.isnan(got) == np.isnan(want)).all(), "NaN positions differ"
    ok = np.isnan(want) | (got == want)
    assert ok.all(), f"first mismatch at {np.argwhere(~ok)[0]}: got {got[~ok][0]}, want {want[~ok][0]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_relu(backend, to, n, dtype):
    x = data(n, dtype, n)
    got = act.relu(to(x), backend=backend)
    assert got.dtype == dtype and got.shape == x.shape
    check_equal(to.host(got), ref_relu(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 5, 1021])
@pytest.mark.parametrize("slope", [0.01, 0.2, -1.5, 0.0])
def test_leaky_relu(backend, to, n, dtype, slope):
    x = data(n, dtype, n + 1)
    got = act.leaky_relu(to(x), slope, backend=backend)
    assert got.dtype == dtype
    check_equal(to.host(got), ref_leaky(x, slope))


def test_default_slope_any_shape_and_non_contiguous(backend, to):
    base = data(7 * 9 * 11, np.float32, 3).reshape(7, 9, 11)
    x = to(base)[::2, 1:, ::3]                         # non-contiguous 3-D view
    got = to.host(act.leaky_relu(x, backend=backend))
    assert got.shape == (4, 8, 4)
    check_equal(got, ref_leaky(base[::2, 1:, ::3], 0.01))
    got = to.host(act.relu(to(base)[:, :, ::2], backend=backend))
    check_equal(got, ref_relu(base[:, :, ::2]))
    scalar = to.host(act.relu(to(np.array(-2.0)), backend=backend))
    assert scalar.shape == () and scalar == 0


def test_errors(backend, to):
    with pytest.raises(TypeError, match="x has dtype int32; expected float32 or float64"):
        act.relu(to(np.ones(3, np.int32)), backend=backend)
    with pytest.raises(TypeError, match="x has dtype float16"):
        act.leaky_relu(to(np.ones(3, np.float16)), backend=backend)
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        act.leaky_relu(to(np.ones(3, np.float32)), "0.1", backend=backend)


# -- emulator-only: the kernel on misaligned views (head, tail, scalar-only paths) ------------------
@pytest.mark.emulator
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_alignment_paths(dtype):
    from pygpu_ops._runtime import backends
    from pygpu_ops._runtime.device import get_device

    if backends.problem("emulator"):
        pytest.skip(f"backend 'emulator' unavailable: {backends.problem('emulator')}")
    dev = get_device("emulator")
    dtype = np.dtype(dtype)
    x = data(203, dtype, 9)
    xd = dev.asarray(x)
    # (input offset, output offset): same misalignment -> scalar head + vectors + tail;
    # different misalignment -> every element scalar.
    for ix, iy in [(0, 0), (1, 1), (3, 3), (1, 0), (0, 2)]:
        n = 203 - max(ix, iy)
        out = dev.empty((203,), dtype)
        out[...] = -7
        dev.launch(act.RELU[dtype], act.launch_config(n, dtype.itemsize),
                   (xd[ix:ix + n], out[iy:iy + n], np.int64(n)))
        got = np.array(out)
        check_equal(got[iy:iy + n], ref_relu(x[ix:ix + n]))
        assert (got[:iy] == -7).all() and (got[iy + n:] == -7).all(), "wrote outside the output"
