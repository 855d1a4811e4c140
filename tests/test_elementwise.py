"""Elementwise ops on every backend against float64 NumPy references written here.

add / sub / mul / div / clip / transpose / concat must give NumPy's results exactly (for float32
operands a float64 + - * / rounded once to float32 *is* the correctly rounded float32 result: 53 >=
2 * 24 + 2 bits, so the double rounding is innocuous); sigmoid / tanh within the ulp bounds the module
states; batch_norm bit for bit against its stated formula and within a float64 bound of exact BN.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import pygpu_ops as po
from pygpu_ops import activations, elementwise as ew
from pygpu_ops._runtime import backends

FLOATS = [np.float32, np.float64]
REF = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b}
OPS = {"add": po.add, "sub": po.sub, "mul": po.mul, "div": po.div}

# Broadcasting corner cases: empty, single, primes, (3,1,5)+(1,4,1), rank mismatch, scalar-shaped,
# 6-D with alternating broadcast dimensions, a zero-size broadcast, several blocks.
SHAPE_PAIRS = [((0,), (0,)), ((1,), (1,)), ((7,), (7,)), ((1021,), (1,)), ((3, 1, 5), (1, 4, 1)),
               ((4, 3), (3,)), ((), (5,)), ((17, 31), (17, 1)), ((2, 1, 3, 1, 5, 1), (1, 4, 1, 6, 1, 2)),
               ((2, 3, 0), (3, 1)), ((1, 1), (1, 1, 1)), ((5, 1, 1, 3), (1, 2, 7, 1)), ((4099,), (4099,))]


def data(shape, dtype, seed):
    """Normal data with special values mixed in: NaN, +-Inf, +-0, huge and tiny normals, ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3], size=shape)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 3e38, -3e38, 1.5e-38, 2.0])
    flat = x.reshape(-1)
    k = min(flat.size, special.size)
    flat[rng.permutation(flat.size)[:k]] = special[rng.permutation(special.size)[:k]]
    with np.errstate(over="ignore"):        # float16: 3e38 is inf
        return np.asarray(x).astype(dtype)


def ints(shape, dtype, seed):
    info = np.iinfo(dtype)
    return np.asarray(np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True, dtype=dtype))


def ref_binary(op, a, b, dtype):
    """float64 arithmetic, rounded once to dtype (exact for float32; NumPy's own for float64)."""
    with np.errstate(all="ignore"):
        return np.asarray(REF[op](np.float64(a) if np.ndim(a) == 0 and not isinstance(a, np.ndarray) else
                                  np.asarray(a, np.float64), np.asarray(b, np.float64))).astype(dtype)


def assert_same(got, want):
    """Same shape, dtype and values; NaN where NaN; zeros of the same sign."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
    nan = np.isnan(want) if want.dtype.kind in "fc" else np.zeros(want.shape, bool)
    if nan.any() or got.dtype.kind in "fc":
        assert (np.isnan(got) == nan).all(), f"NaN at {np.argwhere(np.isnan(got) != nan)[:5].tolist()}"
    ok = nan | (got == want)
    assert ok.all(), (f"{int((~ok).sum())} of {ok.size} differ; first at {np.argwhere(~ok)[0].tolist()}: "
                      f"got {got[~ok][0]!r}, want {want[~ok][0]!r}")
    if got.dtype.kind == "f":
        assert (np.signbit(got) == np.signbit(want))[~nan].all(), "sign of a zero differs"


# -- add / sub / mul / div ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=lambda s: f"{s[0]}+{s[1]}")
@pytest.mark.parametrize("op", list(OPS))
def test_binary_exact(backend, to, op, shapes, dtype):
    a = data(shapes[0], dtype, 1)
    b = data(shapes[1], dtype, 2)
    got = OPS[op](to(a), to(b), backend=backend)
    assert got.flags.c_contiguous
    assert_same(to.host(got), ref_binary(op, a, b, dtype))


@pytest.mark.parametrize("op", list(OPS))
def test_binary_scalars(backend, to, op):
    a = data((6, 5), np.float32, 3)
    for s in (2.5, -3, 0.1, np.int64(7), np.float32(0.3), 1e39):
        with np.errstate(over="ignore"):
            s32 = np.float32(s)
        assert_same(to.host(OPS[op](to(a), s, backend=backend)), ref_binary(op, a, np.float64(s32), np.float32))
        assert_same(to.host(OPS[op](s, to(a), backend=backend)), ref_binary(op, np.float64(s32), a, np.float32))
    zero_d = np.array(1.75, np.float32)
    assert_same(to.host(OPS[op](to(zero_d), to(a), backend=backend)), ref_binary(op, zero_d, a, np.float32))
    got = OPS[op](to(zero_d), 2.0, backend=backend)
    assert got.shape == () and not isinstance(got, np.generic)
    assert_same(to.host(got), ref_binary(op, zero_d, np.float32(2.0), np.float32))


@pytest.mark.parametrize("op", ["add", "div"])
def test_binary_non_contiguous_views(backend, to, op):
    base = data((9, 8, 7), np.float32, 4)
    other = data((7, 8), np.float32, 5)
    views = [
        (lambda x: x[::-1, 1:, ::-2], lambda y: y[:, ::-2]),               # negative strides both sides
        (lambda x: x.transpose(2, 0, 1), lambda y: y[:, None, ::-1]),      # permuted view + a (7, 1, 8)
        (lambda x: x[:, ::3], lambda y: y.T[::3, :1]),                     # steps, a (3, 1) view
    ]
    for va, vb in views:
        a, b = va(to(base)), vb(to(other))
        want = ref_binary(op, va(base), vb(other), np.float32)
        assert_same(to.host(OPS[op](a, b, backend=backend)), want)
    if backend != "cuda":                                                  # a stride-0 view as input
        bcast = np.broadcast_to(other[:1, :7], (5, 8, 7))
        assert_same(to.host(OPS[op](bcast, base[:5, :, :], backend=backend)), ref_binary(op, bcast, base[:5], np.float32))


def ref_add_activation(a, b, activation, dtype):
    """The exactly rounded sum, then relu (s < 0 -> +0) and relu6 (s > 6 -> 6); NaN and -0.0 stay."""
    s = ref_binary("add", a, b, dtype)
    s = np.where(s < 0, dtype(0), s)
    return np.where(s > 6, dtype(6), s) if activation == "relu6" else s


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=lambda s: f"{s[0]}+{s[1]}")
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_add_activation_exact(backend, to, activation, shapes, dtype):
    """add(..., activation=) on every broadcast corner case, with NaN, +-inf, +-0 and values past 6
    (data scaled by 8): the sum's exact rounding, then the activation; equal to relu(add) /
    clip(add, 0, 6)."""
    with np.errstate(over="ignore"):        # 3e38 * 8 is inf in float32: one more special value
        a = data(shapes[0], dtype, 11) * 8
    b = data(shapes[1], dtype, 12)
    got = to.host(po.add(to(a), to(b), activation=activation, backend=backend))
    want = ref_add_activation(a, b, activation, dtype)
    assert_same(got, want)
    if want.size > 100:
        assert (want == 0).any() and np.isnan(want).any() and (activation == "relu" or (want == 6).any())
    if want.size:
        plain = po.add(to(a), to(b), backend=backend)
        two = po.relu(plain, backend=backend) if activation == "relu" else po.clip(plain, 0, 6, backend=backend)
        assert_same(got, to.host(two))


def test_add_activation_scalars_views_and_errors(backend, to):
    with np.errstate(over="ignore"):
        a = data((9, 8, 7), np.float32, 13) * 8
    got = to.host(po.add(to(a)[::-1, 1:, ::-2], -1.5, activation="relu6", backend=backend))
    assert_same(got, ref_add_activation(a[::-1, 1:, ::-2], np.float32(-1.5), "relu6", np.float32))
    for bad in ("gelu", "RELU", 1):
        with pytest.raises(ValueError, match=r"add: activation must be None, 'relu' or 'relu6'; got"):
            po.add(to(a), to(a), activation=bad, backend=backend)


def test_binary_many_dims(backend, to):
    """Ten dimensions that merge run; nine that cannot merge are refused on every backend."""
    a = data((2,) * 10, np.float32, 6)
    assert_same(to.host(po.mul(to(a), to(a[..., :1]), backend=backend)), ref_binary("mul", a, a[..., :1], np.float32))
    x = to(data((2,) * 9, np.float32, 7))
    y = to(data((1, 2) * 4 + (1,), np.float32, 8))     # alternating broadcast: no two neighbours merge
    with pytest.raises(ValueError, match=r"add: the broadcast of a and b has 9 dimensions that cannot be merged"):
        po.add(x, y, backend=backend)
    y8 = data((1, 2) * 4, np.float32, 9)                # eight that cannot merge: the most the kernels take
    x8 = data((2,) * 8, np.float32, 10)
    assert_same(to.host(po.add(to(x8), to(y8), backend=backend)), ref_binary("add", x8, y8, np.float32))


def test_binary_rows_limit_is_checked_before_anything_runs(backend, to):
    if backend == "cuda":
        pytest.skip("np.broadcast_to views: host arrays only")
    a = np.broadcast_to(np.float32(1), (2**31 + 5, 2))
    with pytest.raises(ValueError, match=r"add: the broadcast of a and b has 2147483653 rows of 2 elements"):
        po.add(a, np.ones((1, 2), np.float32), backend=backend)


def test_binary_errors(backend, to):
    f32 = to(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="add: a has dtype int32; expected float32 or float64"):
        po.add(to(np.ones(3, np.int32)), f32, backend=backend)
    with pytest.raises(TypeError, match="sub: b has dtype float64; expected float32, the dtype of a"):
        po.sub(f32, to(np.ones(3)), backend=backend)
    with pytest.raises(TypeError, match="mul: b is a numpy.float64 scalar; expected float32"):
        po.mul(f32, np.float64(2), backend=backend)
    with pytest.raises(TypeError, match="div: a and b are both scalars"):
        po.div(1.0, 2.0, backend=backend)
    with pytest.raises(TypeError, match="add: b must be a real number"):
        po.add(f32, True, backend=backend)
    with pytest.raises(TypeError, match="add: b must be a real number"):
        po.add(f32, 1j, backend=backend)
    with pytest.raises(ValueError, match=r"add: a of shape \(2, 3\) and b of shape \(4,\) do not broadcast"):
        po.add(f32, to(np.ones(4, np.float32)), backend=backend)
    with pytest.raises(TypeError, match="argument 'b' must be a numpy.ndarray"):
        po.add(f32, [1.0, 2.0, 3.0], backend=backend)


def test_float32_subnormals_exact_on_the_host(host_backend):
    tiny = np.float32(1e-40)                                  # subnormal
    a = np.array([tiny, -tiny, 1e-38, 3e-39, 1.0], np.float32)
    b = np.array([tiny, tiny, 1e-3, 0.5, tiny], np.float32)
    for op in OPS:
        assert_same(OPS[op](a, b, backend=host_backend), ref_binary(op, a, b, np.float32))


@pytest.mark.gpu
def test_float32_subnormals_flush_on_the_gpu():
    """CuPy compiles with -ftz=true: subnormal inputs and results become zeros of the same sign."""
    if backends.problem("cuda"):
        pytest.skip(f"backend 'cuda' unavailable: {backends.problem('cuda')}")
    import cupy

    def flush(v):
        v = np.array(v, np.float32)
        return np.where(np.abs(v) < np.finfo(np.float32).tiny, np.copysign(np.float32(0), v), v)

    a = np.array([1e-40, -1e-40, 1e-38, 3e-39, 1.0], np.float32)
    b = np.array([1e-40, 1e-40, 1e-3, 0.5, 1e-40], np.float32)
    for op in OPS:
        want = flush(ref_binary(op, flush(a), flush(b), np.float32))
        with np.errstate(all="ignore"):
            assert_same(OPS[op](cupy.asarray(a), cupy.asarray(b)).get(), want)


# -- sigmoid / tanh -------------------------------------------------------------------------------
SIZES = [0, 1, 3, 4, 5, 17, 1021, 4099]


def ref_sigmoid(x):
    """In float64 for float32 data, in x87 extended precision for float64 data."""
    wide = np.float64 if x.dtype == np.float32 else np.longdouble
    w = x.astype(wide)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-w))


def ref_tanh(x):
    return np.tanh(x.astype(np.float64 if x.dtype == np.float32 else np.longdouble))


#: (ulps, ref): the bounds of the module docstring, in units of eps * |exact| (eps = 2**-23 or 2**-52),
#: plus the smallest normal for what -ftz flushes on a GPU.
UNARY = {"sigmoid": (4, ref_sigmoid), "tanh": (2, ref_tanh)}


def unary_data(n, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 10.0, 60.0], n)).astype(dtype)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -100.0, -90.0, 30.0, 1e-30, -800.0], dtype)
    x[:min(n, special.size)] = special[:min(n, special.size)]
    return x


def check_ulps(got, x, op):
    ulps, ref = UNARY[op]
    want = ref(x)
    got = np.asarray(got)
    assert got.shape == x.shape and got.dtype == x.dtype
    fi = np.finfo(x.dtype)
    err = np.abs(got.astype(want.dtype) - want)
    bound = ulps * fi.eps * np.abs(want) + fi.tiny
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all(), "NaN positions differ"
    bad = ~nan & ~(err <= bound)
    assert not bad.any(), f"{op}: x={x[bad][:3]}, got {got[bad][:3]}, want {want[bad][:3]}"
    return float(np.max(err[~nan] / (fi.eps * np.abs(want[~nan]) + fi.tiny), initial=0.0))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", list(UNARY))
def test_sigmoid_tanh_within_bound(backend, to, op, n, dtype):
    x = unary_data(n, dtype, n)
    got = getattr(po, op)(to(x), backend=backend)
    check_ulps(to.host(got), x, op)


def test_sigmoid_tanh_special_values(backend, to):
    for dtype in FLOATS:
        x = np.array([-np.inf, np.inf, np.nan, -0.0, 0.0], dtype)
        s = to.host(po.sigmoid(to(x), backend=backend))
        assert s[:2].tolist() == [0.0, 1.0] and np.isnan(s[2]) and s[3] == s[4] == 0.5
        t = to.host(po.tanh(to(x), backend=backend))
        assert t[:2].tolist() == [-1.0, 1.0] and np.isnan(t[2])
        assert np.signbit(t[3]) and not np.signbit(t[4])


def test_unary_shapes_and_views(backend, to):
    base = unary_data(7 * 9 * 11, np.float32, 3).reshape(7, 9, 11)
    for op in UNARY:
        got = to.host(getattr(po, op)(to(base)[::-2, 1:, ::3], backend=backend))
        check_ulps(got, np.ascontiguousarray(base[::-2, 1:, ::3]), op)
        got = getattr(po, op)(to(np.array(-2.0, np.float32)), backend=backend)
        assert got.shape == () and not isinstance(got, np.generic)


# -- clip -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [0, 1, 5, 1021])
@pytest.mark.parametrize("bounds", [(-0.5, 0.5), (None, 0.0), (0.0, None), (None, None), (2.0, -1.0),
                                    (-np.inf, 1e39), (0.1, 0.1)])
def test_clip_equals_numpy(backend, to, n, dtype, bounds):
    x = data(n, dtype, n + 11)
    lo, hi = bounds
    got = to.host(po.clip(to(x), lo, hi, backend=backend))
    with np.errstate(over="ignore"):
        lo_t = -np.inf if lo is None else dtype(lo)
        hi_t = np.inf if hi is None else dtype(hi)
    want = np.clip(x.astype(np.float64), np.float64(lo_t), np.float64(hi_t)).astype(dtype)
    assert got.shape == x.shape and got.dtype == dtype
    assert (np.isnan(got) == np.isnan(x)).all()
    assert ((got == want) | np.isnan(x)).all()
    if lo is not None and hi is not None and lo > hi:
        assert (got[~np.isnan(x)] == dtype(hi)).all(), "min > max gives max everywhere"


def test_clip_zero_sign_and_errors(backend, to):
    x = to(np.array([-0.0, 0.0, -1.0, np.nan], np.float32))
    got = to.host(po.clip(x, 0.0, 1.0, backend=backend))
    assert np.signbit(got[:3]).tolist() == [True, False, False] and np.isnan(got[3])
    got = to.host(po.clip(x, -1.0, -0.0, backend=backend))
    assert np.signbit(got[:3]).tolist() == [True, False, True]     # 0.0 is not above -0.0: kept
    with pytest.raises(ValueError, match="clip: min must not be NaN"):
        po.clip(x, np.nan, 1.0, backend=backend)
    with pytest.raises(ValueError, match="clip: max must not be NaN"):
        po.clip(x, None, float("nan"), backend=backend)
    with pytest.raises(TypeError, match="clip: max must be a real number"):
        po.clip(x, 0.0, "1", backend=backend)
    with pytest.raises(TypeError, match="clip: x has dtype int64"):
        po.clip(to(np.ones(3, np.int64)), 0, 1, backend=backend)


# -- batch_norm -----------------------------------------------------------------------------------
def bn_params(C, dtype, seed):
    rng = np.random.default_rng(seed)
    scale, bias, mean = (rng.standard_normal(C).astype(dtype) for _ in range(3))
    var = rng.uniform(0.01, 4.0, C).astype(dtype)
    return scale, bias, mean, var


def ref_batch_norm(x, scale, bias, mean, var, eps, channel_axis):
    """(formula result, exact BN, error bound). The formula is the docstring's: a, b in float64
    rounded once to x's dtype, then a * x and + b each rounded. "Exact" is computed in float64 for
    float32 data and in x87 extended precision for float64 data; the bound is first order in the
    roundings of a, of b (and of bias - mean * a inside it), of a * x and of the sum, each at most
    eps / 2 relative."""
    dt = x.dtype
    a64 = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    b64 = bias.astype(np.float64) - mean.astype(np.float64) * a64
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    a, b = a64.astype(dt).reshape(shape), b64.astype(dt).reshape(shape)
    wide = np.float64 if dt == np.float32 else np.longdouble
    sc, bi, mu, va = (v.astype(wide).reshape(shape) for v in (scale, bias, mean, var))
    with np.errstate(all="ignore"):
        formula = (x * a) * np.ones((), dt) + b
        aw = sc / np.sqrt(va + wide(eps))
        xw = x.astype(wide)
        exact = (xw - mu) * aw + bi
        bound = np.finfo(dt).eps * (np.abs(aw * xw) + np.abs(mu * aw) + np.abs(bi) + np.abs(exact)) + np.finfo(dt).tiny
    return formula, exact, bound


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout,shape", [("NCHW", (2, 3, 5, 7)), ("NCHW", (4, 6)), ("NCHW", (3, 5, 11)),
                                          ("NCHW", (2, 3, 2, 3, 4)), ("NCHW", (1, 1, 1, 1)), ("NCHW", (0, 3, 4)),
                                          ("NCHW", (5, 2, 1, 1)), ("NHWC", (2, 5, 7, 3)), ("NHWC", (4, 6)),
                                          ("NHWC", (2, 3, 300)), ("NHWC", (3, 4, 0))])
def test_batch_norm(backend, to, layout, shape, dtype):
    x = data(shape, dtype, 21)
    axis = 1 if layout == "NCHW" else len(shape) - 1
    params = bn_params(shape[axis], dtype, 22)
    got = po.batch_norm(to(x), *(to(p) for p in params), epsilon=1e-3, layout=layout, backend=backend)
    assert got.flags.c_contiguous
    got = to.host(got)
    formula, exact, bound = ref_batch_norm(x, *params, 1e-3, axis)
    assert_same(got, formula)
    big = np.finfo(dtype).max / 4           # where a * x or y overflow, only the formula applies
    fin = np.isfinite(exact) & (np.abs(exact) < big) & (bound < big * np.finfo(dtype).eps)
    assert (np.abs(got[fin] - exact[fin]) <= bound[fin]).all()


def test_batch_norm_edges(backend, to):
    x = data((2, 3, 4, 5), np.float32, 23)
    scale, bias, mean, var = bn_params(3, np.float32, 24)
    var[1] = -1.0                                    # var + eps < 0: NaN for channel 1, as numpy.sqrt
    got = to.host(po.batch_norm(to(x), to(scale), to(bias), to(mean), to(var), backend=backend))
    assert np.isnan(got[:, 1]).all() and not np.isnan(got[:, [0, 2]][np.isfinite(x[:, [0, 2]])]).any()
    xv = to(x)[:, :, ::-1, 1:]                        # a non-contiguous view
    got = to.host(po.batch_norm(xv, *(to(p) for p in bn_params(3, np.float32, 25)), backend=backend))
    assert_same(got, ref_batch_norm(np.ascontiguousarray(x[:, :, ::-1, 1:]), *bn_params(3, np.float32, 25), 1e-5, 1)[0])
    p = [to(v) for v in (scale, bias, mean, var)]
    with pytest.raises(ValueError, match=r"batch_norm: mean must have shape \(3,\), the channels of x"):
        po.batch_norm(to(x), p[0], p[1], to(np.ones(4, np.float32)), p[3], backend=backend)
    with pytest.raises(ValueError, match=r"batch_norm: scale must have shape \(5,\).*NHWC"):
        po.batch_norm(to(x), *p, layout="NHWC", backend=backend)
    with pytest.raises(TypeError, match="batch_norm: var has dtype float64; expected float32, the dtype of x"):
        po.batch_norm(to(x), p[0], p[1], p[2], to(var.astype(np.float64)), backend=backend)
    with pytest.raises(ValueError, match="batch_norm: layout must be one of 'NCHW', 'NHWC'; got 'NCW'"):
        po.batch_norm(to(x), *p, layout="NCW", backend=backend)
    with pytest.raises(ValueError, match="batch_norm: epsilon must be a finite number"):
        po.batch_norm(to(x), *p, epsilon=np.inf, backend=backend)
    with pytest.raises(ValueError, match="batch_norm: x must have at least 2 dimensions"):
        po.batch_norm(to(np.ones(3, np.float32)), *p, backend=backend)


# -- transpose ------------------------------------------------------------------------------------
TRANSPOSE_CASES = [((), ()), ((5,), (0,)), ((1, 1), (1, 0)), ((3, 7), (1, 0)), ((2, 3, 4, 5), (0, 2, 3, 1)),
                   ((2, 3, 4, 5), (0, 3, 1, 2)), ((3, 1, 5), (2, 0, 1)), ((2, 0, 3), (2, 1, 0)),
                   ((33, 65), (1, 0)), ((2, 3, 1, 5, 2, 3), (5, 3, 1, 0, 4, 2)),
                   ((2, 3, 2, 3, 2, 3, 2, 3), (7, 6, 5, 4, 3, 2, 1, 0)), ((2, 3, 4), (-1, 0, -2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.float16, np.int64])
@pytest.mark.parametrize("shape,axes", TRANSPOSE_CASES, ids=lambda v: str(v))
def test_transpose(backend, to, shape, axes, dtype):
    x = ints(shape, dtype, 31) if np.dtype(dtype).kind in "iu" else data(shape, dtype, 31)
    got = po.transpose(to(x), axes, backend=backend)
    assert got.flags.c_contiguous
    want = np.array(np.transpose(x, axes), order="C")
    got = to.host(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes(), "bits differ (NaN payloads and -0.0 must be moved unchanged)"


def test_transpose_views_default_and_errors(backend, to):
    x = data((4, 5, 6), np.float32, 32)
    v = to(x)[::-1, 1:, ::2]
    assert_same(to.host(po.transpose(v, (2, 0, 1), backend=backend)), np.transpose(x[::-1, 1:, ::2], (2, 0, 1)).copy())
    assert_same(to.host(po.transpose(to(x), backend=backend)), x.T.copy())
    assert_same(to.host(po.transpose(to(x), np.array([1, 2, 0]), backend=backend)), x.transpose(1, 2, 0).copy())
    big = data((2,) * 10, np.float32, 33)
    assert_same(to.host(po.transpose(to(big), (1, 0) + tuple(range(2, 10)), backend=backend)),
                np.ascontiguousarray(big.transpose((1, 0) + tuple(range(2, 10)))))
    with pytest.raises(ValueError, match=r"transpose: the permutation has 9 dimensions that cannot be merged"):
        po.transpose(to(data((2,) * 9, np.float32, 34)), tuple(range(8, -1, -1)), backend=backend)
    with pytest.raises(ValueError, match=r"transpose: axes must be a permutation of 0..2"):
        po.transpose(to(x), (0, 0, 1), backend=backend)
    with pytest.raises(ValueError, match=r"transpose: axes must be a permutation"):
        po.transpose(to(x), (0, 1), backend=backend)
    with pytest.raises(ValueError, match=r"transpose: axes must be between -3 and 2; got 3"):
        po.transpose(to(x), (0, 1, 3), backend=backend)
    with pytest.raises(TypeError, match=r"transpose: axes must be an int"):
        po.transpose(to(x), (0, 1, 2.0), backend=backend)
    with pytest.raises(TypeError, match=r"transpose: axes must be a sequence of ints or None"):
        po.transpose(to(x), 1, backend=backend)
    with pytest.raises(TypeError, match=r"transpose: x has dtype complex256|transpose: x has dtype object"):
        po.transpose(np.ones(2, object), backend="numpy")


# -- concat ---------------------------------------------------------------------------------------
CONCAT_CASES = [([(3,)], 0), ([(3,), (0,), (4,)], 0), ([(2, 3), (5, 3)], 0), ([(2, 3), (2, 1), (2, 7)], 1),
                ([(2, 3, 4, 5), (2, 1, 4, 5), (2, 6, 4, 5)], 1), ([(2, 3, 4), (2, 3, 5)], -1),
                ([(1, 1, 1), (1, 1, 1)], 2), ([(0, 3), (0, 2)], 1), ([(3, 2, 1, 2, 1, 2, 1, 2, 3)] * 3, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int64])
@pytest.mark.parametrize("shapes,axis", CONCAT_CASES, ids=lambda v: str(v))
def test_concat(backend, to, shapes, axis, dtype):
    xs = [ints(s, dtype, 40 + i) if np.dtype(dtype).kind in "iu" else data(s, dtype, 40 + i)
          for i, s in enumerate(shapes)]
    got = po.concat([to(x) for x in xs], axis, backend=backend)
    assert got.flags.c_contiguous
    want = np.concatenate(xs, axis)
    got = to.host(got)
    assert got.shape == want.shape and got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_concat_views_and_errors(backend, to):
    x = data((4, 6, 5), np.float32, 50)
    y = data((6, 4, 3), np.float32, 51)
    parts = [to(x)[::-1, :, 1:], to(y).transpose(1, 0, 2), to(x)[:, :, ::4]]
    want = np.concatenate([x[::-1, :, 1:], y.transpose(1, 0, 2), x[:, :, ::4]], axis=2)
    assert_same(to.host(po.concat(parts, axis=-1, backend=backend)), want)
    assert_same(to.host(po.concat((to(x),), backend=backend)), x)
    a = to(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"concat: arrays\[1\] has shape \(3, 3\); expected 2 dimensions matching"):
        po.concat([a, to(np.ones((3, 3), np.float32))], 1, backend=backend)
    with pytest.raises(ValueError, match=r"concat: arrays\[1\] has shape \(2, 3, 1\)"):
        po.concat([a, to(np.ones((2, 3, 1), np.float32))], 0, backend=backend)
    with pytest.raises(TypeError, match=r"concat: arrays\[1\] has dtype float64; expected float32"):
        po.concat([a, to(np.ones((2, 3)))], 0, backend=backend)
    with pytest.raises(ValueError, match=r"concat: axis must be between -2 and 1; got 2"):
        po.concat([a, a], 2, backend=backend)
    with pytest.raises(ValueError, match=r"concat: arrays\[0\] is 0-d"):
        po.concat([to(np.ones((), np.float32))], 0, backend=backend)
    with pytest.raises(ValueError, match="concat: arrays must hold at least one array"):
        po.concat([], 0, backend=backend)
    with pytest.raises(TypeError, match="concat: arrays must be a list or tuple of arrays"):
        po.concat(a, 0, backend=backend)


# -- emulator only: the kernels themselves on tiny grids and misaligned views ------------------------
def _emulator():
    from pygpu_ops._runtime.device import get_device

    if backends.problem("emulator"):
        pytest.skip(f"backend 'emulator' unavailable: {backends.problem('emulator')}")
    return get_device("emulator")


@pytest.mark.emulator
@pytest.mark.parametrize("grid,block", [((1, 1), (4, 2)), ((2, 1), (1, 8)), ((1, 3), (32, 8))])
def test_strided_kernels_cover_everything_from_any_grid(grid, block):
    """The grid-stride loops: a grid far smaller than the work, and blocks of any (bx, by)."""
    from pygpu_ops._runtime.device import Launch

    dev = _emulator()
    a, b = data((5, 1, 7, 3), np.float32, 60), data((1, 4, 7, 1), np.float32, 61)
    shape = (5, 4, 7, 3)
    ops = [dev.asarray(a), dev.asarray(b)]
    dims = ew._device_dims(ops, shape, [None, None])
    out = dev.empty(shape, np.float32)
    dev.launch(ew.BINARY[("sub", np.dtype(np.float32))], Launch(grid=grid, block=block),
               (ops[0], ops[1], out, ew._geometry(dims)))
    assert_same(np.array(out), ref_binary("sub", a, b, np.float32))
    x = data((6, 5, 4), np.float64, 62)
    src = dev.asarray(x).transpose(2, 0, 1)
    out = dev.empty((4, 6, 5), np.float64)
    dims = ew._device_dims([src, out], (4, 6, 5), [None, None])
    dev.launch(ew.COPY[8], Launch(grid=grid, block=block), (src.view(np.uint64), out.view(np.uint64), ew._geometry(dims)))
    assert np.array(out).tobytes() == np.ascontiguousarray(x.transpose(2, 0, 1)).tobytes()


@pytest.mark.emulator
@pytest.mark.parametrize("dtype", FLOATS)
def test_unary_kernel_alignment_paths(dtype):
    dev = _emulator()
    dtype = np.dtype(dtype)
    x = unary_data(203, dtype, 63)
    xd = dev.asarray(x)
    for ix, iy in [(0, 0), (1, 1), (3, 3), (1, 0), (0, 2)]:
        n = 203 - max(ix, iy)
        out = dev.empty((203,), dtype)
        out[...] = -7
        dev.launch(ew.UNARY[("sigmoid", dtype)], activations.launch_config(n, dtype.itemsize),
                   (xd[ix:ix + n], out[iy:iy + n], np.int64(n)))
        got = np.array(out)
        check_ulps(got[iy:iy + n], x[ix:ix + n], "sigmoid")
        assert (got[:iy] == -7).all() and (got[iy + n:] == -7).all(), "wrote outside the output"


def test_rows_launch_shapes():
    for inner, rows in itertools.product([1, 2, 5, 31, 32, 255, 256, 257, 10**9], [1, 3, 10**6]):
        L = ew.rows_launch(rows, inner)
        bx, by = L.block
        assert bx * by == 256 and bx >= min(inner, 256) and bx & (bx - 1) == 0
        assert 1 <= L.grid[0] <= 1 << 16 and 1 <= L.grid[1] <= 65535
        assert L.grid[0] * bx >= min(inner, (1 << 16) * bx) and L.grid[1] * by >= min(rows, 65535 * by)


def test_merge_dims():
    # (N, C, H, W) + (1, C, 1, 1): N | C | H*W
    assert ew._merge_dims((2, 3, 4, 5), [[60, 20, 5, 1], [0, 1, 0, 0]]) == [(2, [60, 0]), (3, [20, 1]), (20, [1, 0])]
    assert ew._merge_dims((2, 3, 4), [[12, 4, 1], [12, 4, 1]]) == [(24, [1, 1])]
    assert ew._merge_dims((1, 1), [[0, 0], [0, 0]]) == [(1, [0, 0])]
    assert ew._merge_dims((3, 1, 5), [[5, 0, 1], [0, 1, 0]]) == [(15, [1, 0])]   # b is a scalar
    assert ew._merge_dims((3, 4, 5), [[5, 0, 1], [0, 1, 0]]) == [(3, [5, 0]), (4, [0, 1]), (5, [1, 0])]


def test_exported_from_the_package():
    names = {"add", "sub", "mul", "div", "sigmoid", "tanh", "clip", "batch_norm", "transpose", "concat"}
    assert names <= set(po.__all__)
    assert all(getattr(po, n) is getattr(ew, n) for n in names)
