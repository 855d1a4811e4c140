"""softmax / log_softmax: every ladder step and the strided kernel on every backend against a float64 reference."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close_bound
from pygpu_ops import normalization as nz
from pygpu_ops.normalization import log_softmax, softmax, softmax_variants

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")

VARIANTS = softmax_variants() + ("strided",)
# Around a 16-byte pack (3, 4, 5: rows of one pack with a scalar head or tail), the warp width
# (31, 32, 33), the register limit of the warp kernel (1023, 1025), the switch to 1024-thread blocks
# (4097) and past the block kernel's shared-memory cache for float32 (20000 * 4 bytes > 64 KiB), so
# both of its paths run. Rows of a length that is not a multiple of 4 start at every alignment.
LENGTHS = (1, 3, 4, 5, 31, 32, 33, 1023, 1025, 4097, 20000)
KINDS = [(np.float32, False), (np.float32, True), (np.float64, False), (np.float64, True)]
KIND_IDS = ["f32", "f32-log", "f64", "f64-log"]


def reference(x, axis, log):
    """float64 softmax / log_softmax with PyTorch's edge cases written out, and an error bound."""
    eps = float(np.finfo(x.dtype).eps)
    xm = np.moveaxis(x.astype(np.float64), axis, -1)
    shape = xm.shape
    r = xm.reshape(-1, shape[-1]) if xm.size else xm.reshape(0, max(shape[-1] if shape else 1, 1))
    L = r.shape[1]
    bad = np.isnan(r).any(1) | np.isposinf(r).any(1) | np.isneginf(r).all(1)
    good = r[~bad]
    m = good.max(axis=1, keepdims=True) if good.size else np.zeros((0, 1))
    z = good - m  # -inf entries stay -inf
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    want = np.full(r.shape, np.nan)
    bound = np.zeros(r.shape)
    az = np.where(np.isfinite(z), np.abs(z), 0.0)
    if log:
        w = z - np.log(s)
        want[~bad] = w
        # rounding of x - m, of the sum (at worst L terms in sequence), of log and the subtraction
        bound[~bad] = eps * (2 * az + np.where(np.isfinite(w), np.abs(w), 0) + np.abs(np.log(s)) + L + 8)
    else:
        w = e / s
        want[~bad] = w
        # relative: exp of a rounded argument (|z| eps), the sum, the reciprocal; plus flushed subnormals
        bound[~bad] = w * eps * (2 * az + L + 8) + 4 * float(np.finfo(x.dtype).tiny)
    want = np.moveaxis(want.reshape(shape), -1, axis)
    bound = np.moveaxis(bound.reshape(shape), -1, axis)
    return want, bound


def signal(rng, shape, dtype):
    """N(0, 2) data with a few large outliers per row, so some probabilities are far from tiny."""
    x = 2.0 * rng.standard_normal(shape)
    flat = x.reshape(-1)
    hits = rng.choice(flat.size, size=max(1, flat.size // 97), replace=False)
    flat[hits] += rng.uniform(6.0, 12.0, size=hits.size)
    return x.astype(dtype)


def run(fn_log, x, to, backend, **kw):
    f = log_softmax if fn_log else softmax
    return to.host(f(to(x), backend=backend, **kw))


def rows_for(L):
    return max(2, min(37, 3000 // L))


@pytest.mark.parametrize("dtype,log", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_row_lengths(backend, to, variant, L, dtype, log):
    rng = np.random.default_rng(L * 31 + len(variant))
    x = signal(rng, (rows_for(L), L), dtype)
    got = run(log, x, to, backend, variant=variant)
    assert got.dtype == dtype and got.shape == x.shape
    want, bound = reference(x, -1, log)
    assert_close_bound(got, want, bound, f"{variant} L={L}")
    if not log:
        np.testing.assert_allclose(got.astype(np.float64).sum(-1), 1.0, rtol=0, atol=(L + 8) * np.finfo(dtype).eps)


def device_view(backend, to, host, offset):
    """``host[offset:]`` as a view into one device buffer: its first element ``offset`` elements
    past the buffer's start, so past a 16-byte boundary (the emulator and CuPy allocate aligned)."""
    if backend == "emulator":
        from pygpu_ops._runtime import emulator

        return emulator.to_device(host)[offset:]
    return to(host)[offset:]


@pytest.mark.parametrize("dtype,log", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("L", (1, 3, 4, 5, 31, 33, 1023, 1025, 4097))
@pytest.mark.parametrize("variant", ("warp", "block"))
def test_unaligned_input_views(backend, to, variant, L, dtype, log):
    """The 128-bit paths on an input that starts at every offset from a 16-byte boundary: the
    scalar head covers up to the boundary, and the output (a fresh, aligned array) then has another
    alignment than the input, so its packs are stored element by element."""
    rows = max(2, min(9, 2000 // L))
    for offset in range(16 // np.dtype(dtype).itemsize):
        rng = np.random.default_rng(L * 7 + offset)
        flat = signal(rng, (offset + rows * L,), dtype)
        if L >= 4:
            flat[offset + 1] = -np.inf                      # row 0: one -inf entry gives 0
            flat[offset + L:offset + 2 * L] = -np.inf       # row 1: only -inf gives NaN
        x = flat[offset:].reshape(rows, L)
        xd = device_view(backend, to, flat, offset).reshape(rows, L)
        f = log_softmax if log else softmax
        got = to.host(f(xd, variant=variant, backend=backend))
        want, bound = reference(x, -1, log)
        assert_close_bound(got, want, bound, f"{variant} L={L} offset={offset}")
        if L >= 4:
            assert got[0, 1] == (-np.inf if log else 0.0) and np.isnan(got[1]).all()


def edge_rows(L, dtype):
    """Rows of length L >= 4 holding the special values, each on finite random data."""
    rng = np.random.default_rng(L)
    base = signal(rng, (10, L), np.float64)
    inf = np.inf
    base[0, 1] = -inf                     # one -inf entry: gives 0
    base[1, :] = -inf                     # only -inf: NaN
    base[2, L // 2] = inf                 # +inf: the row is NaN
    base[3, 0] = np.nan                   # NaN: the row is NaN
    base[4, :L - 1] = -inf                # a long -inf prefix (the online rescale guard), then one value
    base[5, :] = -inf                     # -inf and +inf: NaN
    base[5, L - 1] = inf
    base[6, :] = np.nan                   # only NaN
    base[7, ::2] = -inf                   # every other entry -inf
    base[8, :] = 3.5                      # constant row: uniform
    base[9, 0] = 80.0                     # a dominant entry (exp would overflow float32 without the max)
    return base.astype(dtype)


@pytest.mark.parametrize("dtype,log", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("L,variant", [(5, "naive"), (5, "online"), (4, "warp"), (40, "warp"), (1500, "warp"),
                                       (1500, "block"), (17000, "block"), (40, "strided"), (7, "warp"),
                                       (23, "warp"), (4099, "warp"), (5, "block"), (1027, "block"),
                                       (17001, "block")])
def test_edge_cases(backend, to, L, variant, dtype, log):
    x = edge_rows(L, dtype)
    got = run(log, x, to, backend, variant=variant)
    want, bound = reference(x, -1, log)
    assert_close_bound(got, want, bound, f"{variant} L={L}")
    zero = -np.inf if log else 0.0
    assert got[0, 1] == zero and (got[7, ::2] == zero).all()
    assert np.isnan(got[[1, 2, 3, 5, 6]]).all()
    assert not np.isnan(got[[0, 4, 7, 8, 9]]).any()


@pytest.mark.parametrize("dtype,log", KINDS, ids=KIND_IDS)
def test_edge_cases_strided_axis(backend, to, dtype, log):
    x = np.ascontiguousarray(edge_rows(9, dtype).T)  # the rows run along axis 0
    got = run(log, x, to, backend, axis=0)
    want, bound = reference(x, 0, log)
    assert_close_bound(got, want, bound)


@pytest.mark.parametrize("shape,axis", [((4, 37, 5), 0), ((4, 37, 5), 1), ((4, 37, 5), 2), ((4, 37, 5), -2),
                                        ((3, 700, 3), 1), ((2, 1100, 1), 1), ((6, 40), 0), ((2, 3, 70), -1),
                                        ((1,), 0), ((5, 1, 7), 1)])
@pytest.mark.parametrize("dtype,log", KINDS[::3], ids=KIND_IDS[::3])
def test_any_axis(backend, to, shape, axis, dtype, log):
    rng = np.random.default_rng(sum(shape) + axis)
    x = signal(rng, shape, dtype)
    got = run(log, x, to, backend, axis=axis)
    want, bound = reference(x, axis, log)
    assert got.shape == shape
    assert_close_bound(got, want, bound, f"{shape} axis={axis}")


def test_non_contiguous_and_0d(backend, to):
    rng = np.random.default_rng(3)
    base = signal(rng, (50, 30), np.float32)
    x = base.T[::2]  # (15, 50), neither C- nor F-contiguous
    want, bound = reference(np.ascontiguousarray(x), -1, False)
    assert_close_bound(to.host(softmax(to(x), backend=backend)), want, bound)
    want, bound = reference(np.ascontiguousarray(x), 0, True)
    assert_close_bound(to.host(log_softmax(to(x), axis=0, backend=backend)), want, bound)
    s = to.host(softmax(to(np.array(2.5, np.float64)), backend=backend))
    assert s.shape == () and s == 1.0
    s = to.host(log_softmax(to(np.array(-np.inf, np.float32)), axis=0, backend=backend))
    assert s.shape == () and np.isnan(s)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_results_are_c_contiguous_for_fortran_inputs(backend, to, axis):
    """Every backend returns a new C-contiguous array (the kernels write one), an F-order or
    transposed input included."""
    x = np.asfortranarray(signal(np.random.default_rng(5), (4, 3, 6), np.float32))
    for f in (softmax, log_softmax):
        y = to.host(f(to(x), axis=axis, backend=backend))
        assert y.flags.c_contiguous and y.shape == x.shape


@pytest.mark.parametrize("shape,axis", [((0, 5), -1), ((3, 0), -1), ((3, 0), 0), ((2, 0, 3), 1), ((0,), 0)])
def test_zero_size(backend, to, shape, axis):
    for f in (softmax, log_softmax):
        got = to.host(f(to(np.zeros(shape, np.float32)), axis=axis, backend=backend))
        assert got.shape == shape and got.dtype == np.float32


def test_errors(backend, to):
    x = to(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="x has dtype int32; expected float32 or float64"):
        softmax(to(np.ones((3, 4), np.int32)), backend=backend)
    with pytest.raises(TypeError, match="x has dtype float16"):
        log_softmax(to(np.ones((3, 4), np.float16)), backend=backend)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        softmax(x, axis=2, backend=backend)
    with pytest.raises(ValueError, match="axis -3 is out of range"):
        log_softmax(x, axis=-3, backend=backend)
    with pytest.raises(TypeError, match="axis must be an int; got float"):
        softmax(x, axis=1.0, backend=backend)
    with pytest.raises(TypeError, match="axis must be an int; got bool"):
        softmax(x, axis=True, backend=backend)
    with pytest.raises(ValueError, match="variant must be one of"):
        softmax(x, variant="fastest", backend=backend)
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        softmax([1.0, 2.0], backend=backend)


@pytest.mark.parametrize("axis", [0, 1])
def test_axis_length_bound(backend, to, axis):
    """Issue 17: the kernels' int loop counters step up to 4 * BLOCK past the axis length, so an
    axis longer than 2**31 - 4097 is refused (before anything is allocated: a broadcast view)."""
    if backend == "cuda":
        pytest.skip("broadcast NumPy views stand in for huge inputs; not for CuPy arrays")
    from test_pooling import address_space_cap

    shape = (2**31 - 100, 1) if axis == 0 else (1, 2**31 - 100)
    x = np.broadcast_to(np.float32(0), shape)
    with address_space_cap():
        for fn, op in ((softmax, "softmax"), (log_softmax, "log_softmax")):
            with pytest.raises(ValueError, match=rf"{op}: the softmax axis has 2147483548 elements; at most "
                                                 rf"2\*\*31 - 4097 are supported"):
                fn(x, axis=axis, backend=backend)


def test_variants_registry():
    assert softmax_variants() == ("naive", "online", "warp", "block")
    for v in nz.SOFTMAX_LADDER + (nz.STRIDED,):
        for k in v.kernels.values():
            assert k.symbol == f"softmax_{v.name}" and k.source == v.source
    assert [v.source for v in nz.SOFTMAX_LADDER] == [f"softmax/0{i}_{n}.cu" for i, n in
                                                     enumerate(softmax_variants(), 1)]
    assert nz.warp_config(1) == (1, 1) and nz.warp_config(33) == (2, 32) and nz.warp_config(1024) == (32, 32)
    assert nz.warp_config(1025) == (0, 32)
    # doubles: at most 16 per lane in registers (128 bytes), longer rows stream
    assert nz.warp_config(512, 8) == (16, 32) and nz.warp_config(513, 8) == (0, 32)
    from pygpu_ops._runtime.kernels import all_kernels

    warp = [k.name_expression for k in all_kernels() if k.symbol == "softmax_warp"]
    assert "softmax_warp<float, false, 32, 32>" in warp
    assert not any(e.startswith("softmax_warp<double") and ", 32, 32>" in e for e in warp)


# -- emulator-only: shared-memory races / shuffles show up as seed-dependent results ------------------
@pytest.mark.emulator
@pytest.mark.parametrize("variant,shape,axis", [("block", (3, 1500), -1), ("block", (2, 17000), -1),
                                                ("warp", (9, 200), -1), ("warp", (13, 7), -1),
                                                ("warp", (2, 1100), -1), ("strided", (3, 300, 5), 1),
                                                ("strided", (2, 70, 40), 1)])
def test_kernels_race_free_under_two_schedules(variant, shape, axis):
    from pygpu_ops._runtime import backends

    if backends.problem("emulator"):
        pytest.skip(f"backend 'emulator' unavailable: {backends.problem('emulator')}")
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    x = signal(np.random.default_rng(4), shape, np.float32)
    run_under_seeds(lambda: softmax(x, axis=axis, variant=variant, backend="emulator"), seeds=(1, 2))
    run_under_seeds(lambda: log_softmax(x, axis=axis, variant=variant, backend="emulator"), seeds=(3, 4))
