"""relu / leaky_relu on every backend against plain float64 formulas written here."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import np_matrix
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


# -- one answer on every backend (issue 17, items 5 and 10) -------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_negative_zero(backend, to, dtype):
    """relu returns x unless x < 0 (PyTorch's eager CPU clamp_min): -0.0 stays -0.0."""
    x = np.array([-0.0, 0.0, -1.0, 2.0, np.nan, -np.inf], dtype)
    got = to.host(act.relu(to(x), backend=backend))
    assert np.signbit(got).tolist() == [True, False, False, False, False, False]
    check_equal(got, ref_relu(x))
    got = to.host(act.leaky_relu(to(x), 0.5, backend=backend))
    assert np.signbit(got[:2]).tolist() == [True, False]


@pytest.mark.parametrize("call", ["relu", "leaky_relu"])
def test_zero_d_input_gives_zero_d_array(backend, to, call):
    fn = act.relu if call == "relu" else act.leaky_relu
    got = fn(to(np.array(-3.0, np.float32)), backend=backend)
    assert not isinstance(got, np.generic), f"{call} returned a scalar {type(got).__name__}"
    assert got.shape == () and got.dtype == np.float32
    assert to.host(got) == (0.0 if call == "relu" else np.float32(-0.03))


@pytest.mark.parametrize("call", ["relu", "leaky_relu"])
def test_fortran_order_input_gives_c_contiguous_result(backend, to, call):
    fn = act.relu if call == "relu" else act.leaky_relu
    base = data(6 * 7, np.float32, 4).reshape(6, 7)
    x = to(np.ascontiguousarray(base.T)).T            # an F-ordered (6, 7) view on any backend
    assert x.flags.f_contiguous and not x.flags.c_contiguous
    got = fn(x, backend=backend)
    assert got.flags.c_contiguous and got.shape == (6, 7)
    check_equal(to.host(got), ref_relu(base) if call == "relu" else ref_leaky(base, 0.01))


@pytest.mark.parametrize("slope", [np.inf, -np.inf, np.nan, 1e39])
def test_leaky_relu_non_finite_slope_is_ieee(backend, to, slope):
    """Any real slope is accepted (as torch), rounded to x's dtype (1e39 -> inf in float32)."""
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan], np.float32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = to.host(act.leaky_relu(to(x), slope, backend=backend))
    with np.errstate(over="ignore"):
        want = ref_leaky(x, slope)
    check_equal(got, want)


def test_slope_beyond_float64_is_a_value_error(backend, to):
    x = to(np.ones(3, np.float32))
    for huge in (10**400, -(10**400)):
        with pytest.raises(ValueError, match="leaky_relu: negative_slope must be a real number within float64's range"):
            act.leaky_relu(x, huge, backend=backend)
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        act.leaky_relu(x, True, backend=backend)


def test_matrix_input_gives_ndarray(host_backend):
    backend_name = host_backend
    m = np_matrix([[1.0, -2.0], [-0.0, 4.0]])
    for got in (act.relu(m, backend=backend_name), act.leaky_relu(m, backend=backend_name)):
        assert type(got) is np.ndarray and got.shape == (2, 2)
