"""max_pool2d / avg_pool2d / global_avg_pool2d on every backend, both layouts, against direct-loop float64 references."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close_bound
from pygpu_ops.pooling import avg_pool2d, global_avg_pool2d, max_pool2d

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")

LAYOUTS = ("NCHW", "NHWC")


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's output size, written out: floor or ceil of (size + 2p - d(k-1) - 1) / s, plus one;
    with ceil_mode a last window that would start in the right padding is dropped."""
    span = size + 2 * p - d * (k - 1) - 1
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def ref_max(x, k, s, p, d, ceil_mode):
    """Direct loops over every window (x NCHW): values (float64) and int64 indices as PyTorch."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, k[0], s[0], p[0], d[0], ceil_mode), out_size(W, k[1], s[1], p[1], d[1], ceil_mode)
    vals = np.empty((N, C, OH, OW))
    idx = np.empty((N, C, OH, OW), np.int64)
    x64 = x.astype(np.float64)
    for oh in range(OH):
        for ow in range(OW):
            taps = [(oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1])
                    for i in range(k[0]) for j in range(k[1])]
            taps = [(h, w) for h, w in taps if 0 <= h < H and 0 <= w < W]
            if not taps:
                # PyTorch: -inf, index of the first tap position at or after 0
                h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
                while h0 < 0:
                    h0 += d[0]
                while w0 < 0:
                    w0 += d[1]
                vals[:, :, oh, ow] = -np.inf
                idx[:, :, oh, ow] = h0 * W + w0
                continue
            for n in range(N):
                for c in range(C):
                    v = np.array([x64[n, c, h, w] for h, w in taps])
                    nan = np.flatnonzero(np.isnan(v))
                    t = nan[-1] if nan.size else int(np.argmax(v))  # last NaN, else first maximum
                    vals[n, c, oh, ow] = v[t]
                    idx[n, c, oh, ow] = taps[t][0] * W + taps[t][1]
    return vals, idx


def ref_avg(x, k, s, p, ceil_mode, count_include_pad):
    """Direct loops: sum of the window inside the input over PyTorch's divisor; and an error bound."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, k[0], s[0], p[0], 1, ceil_mode), out_size(W, k[1], s[1], p[1], 1, ceil_mode)
    x64 = x.astype(np.float64)
    want = np.empty((N, C, OH, OW))
    bound = np.empty((N, C, OH, OW))
    eps = float(np.finfo(x.dtype).eps)
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
            h1, w1 = min(h0 + k[0], H + p[0]), min(w0 + k[1], W + p[1])  # clipped to the padded input
            padded = (h1 - h0) * (w1 - w0)
            hs, ws, he, we = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            inside = max(he - hs, 0) * max(we - ws, 0)
            div = padded if count_include_pad else inside
            win = x64[:, :, hs:he, ws:we]
            want[:, :, oh, ow] = win.sum(axis=(2, 3)) / div if inside else 0.0
            bound[:, :, oh, ow] = 2 * eps * (inside + 2) * np.abs(win).sum(axis=(2, 3)) / max(div, 1)
    return want, bound


def to_layout(x, layout):
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_layout(y, layout):
    return y if layout == "NCHW" else y.transpose(0, 3, 1, 2)


# (shape NCHW, kernel, stride, padding, dilation, ceil_mode): odd sizes, every option, and combos
CASES = [
    ((2, 3, 9, 11), 3, 2, 1, 1, False),
    ((2, 3, 9, 11), 3, 2, 1, 1, True),          # ceil_mode with padding: last windows hang over
    ((2, 2, 10, 13), 3, 3, 1, 1, True),         # windows past the padded input (divisor rule)
    ((1, 2, 5, 5), 2, 2, 0, 1, True),           # ceil_mode without padding: partial last window
    ((1, 3, 7, 8), (2, 3), (1, 2), (1, 1), (2, 1), True),   # padding with dilation, pairs
    ((2, 1, 8, 5), (3, 2), (2, 3), (1, 0), (3, 2), False),
    ((1, 3, 6, 6), 4, 1, 2, 1, False),          # the largest padding allowed
    ((3, 4, 1, 1), 1, None, 0, 1, False),       # 1x1 input, 1x1 kernel
    ((1, 2, 4, 7), (1, 3), None, (0, 1), 1, True),   # stride defaults to the kernel
    ((2, 37, 6, 7), 2, 1, 1, 1, False),         # C > 32 for the channel-mapped NHWC kernels
    ((1, 1, 1, 4), 2, 1, 2, 3, False),          # a dilated window with no tap inside the input
    ((1, 2, 2, 3), 7, 1, 3, 1, False),          # padding larger than the input
    ((2, 1, 3, 2), (5, 4), (2, 3), 2, 1, True),  # kernel and padding past the input, ceil_mode
    ((1, 3, 2, 2), (2, 3), (3, 1), (1, 2), (4, 2), True),  # dilation larger than the input
    ((1, 1, 3, 3), 5, 4, 2, 1, True),           # stride larger than the input, ceil_mode
]
CASE_IDS = [f"{'x'.join(map(str, c[0]))}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-{'ceil' if c[5] else 'floor'}"
            .replace(" ", "") for c in CASES]


def data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_max_pool2d(backend, to, case, dtype, layout):
    shape, k, s, p, d, ceil_mode = case
    x = data(shape, dtype, sum(shape))
    want, want_idx = ref_max(x, pair(k), pair(k if s is None else s), pair(p), pair(d), ceil_mode)
    xin = to(to_layout(x, layout))
    got, idx = max_pool2d(xin, k, s, p, d, ceil_mode, True, layout, backend=backend)
    got, idx = from_layout(to.host(got), layout), from_layout(to.host(idx), layout)
    assert got.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)
    only = to.host(max_pool2d(xin, k, s, p, d, ceil_mode, False, layout, backend=backend))
    np.testing.assert_array_equal(from_layout(only, layout), want)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [c for c in CASES if c[4] == 1], ids=[i for i, c in zip(CASE_IDS, CASES) if c[4] == 1])
def test_avg_pool2d(backend, to, case, dtype, count_include_pad, layout):
    shape, k, s, p, _, ceil_mode = case
    x = data(shape, dtype, sum(shape) + 1)
    want, bound = ref_avg(x, pair(k), pair(k if s is None else s), pair(p), ceil_mode, count_include_pad)
    got = avg_pool2d(to(to_layout(x, layout)), k, s, p, ceil_mode, count_include_pad, layout, backend=backend)
    got = from_layout(to.host(got), layout)
    assert got.dtype == dtype
    assert_close_bound(got, want, bound)


def test_avg_divisor_ceil_mode_with_count_include_pad(backend, to):
    # H = W = 5, k = 3, s = 2, p = 1, ceil_mode: OH = 3; the last window covers rows 3..5 of the
    # padded input (-1..5), i.e. rows 3, 4 and the right pad row 5: divisor 3 per axis, and the
    # window never counts anything past it.
    x = np.ones((1, 1, 5, 5), np.float32)
    got = to.host(avg_pool2d(to(x), 3, 2, 1, ceil_mode=True, count_include_pad=True, backend=backend))
    want = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]], np.float64) / 9
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-6)
    # k = 2, s = 2, p = 0 on 5 x 5 with ceil_mode: OH = 3 and the last window (rows 4, 5) sticks out
    # past the (unpadded) input: that part is not counted even with count_include_pad, so the
    # divisor is 1 per axis there and every mean of ones is exactly 1 (0.5 would be the bug).
    got = to.host(avg_pool2d(to(np.ones((1, 1, 5, 5), np.float32)), 2, 2, 0, ceil_mode=True, backend=backend))
    np.testing.assert_allclose(got[0, 0], np.ones((3, 3)), rtol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_pool2d_nan_and_inf(backend, to, layout):
    x = data((2, 3, 7, 9), np.float32, 5)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 1, 2] = np.nan       # two NaNs in one window: the index is the last one's
    x[1, 2, 4:7, 0:3] = -np.inf  # an all -inf window
    x[1, 1, 3, 3] = np.inf
    want, want_idx = ref_max(x, (3, 3), (2, 2), (1, 1), (1, 1), True)
    got, idx = max_pool2d(to(to_layout(x, layout)), 3, 2, 1, ceil_mode=True, return_indices=True, layout=layout,
                          backend=backend)
    got, idx = from_layout(to.host(got), layout), from_layout(to.host(idx), layout)
    assert np.isnan(got[0, 0, 0, 0]) and np.isnan(got[0, 0, 0, 1])
    assert idx[0, 0, 0, 0] == 1 * 9 + 1 and idx[0, 0, 0, 1] == 1 * 9 + 2  # (0, 1) holds both NaNs
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(idx, want_idx)
    avg = to.host(avg_pool2d(to(to_layout(x, layout)), 2, layout=layout, backend=backend))
    assert np.isnan(from_layout(avg, layout)[0, 0, 0, 0])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("indices", [False, True], ids=["values", "indices"])
def test_max_pool2d_ties_keep_the_first_maximum_signed_zeros(backend, to, layout, indices):
    """Of equal values the first in row-major window order wins (PyTorch's and the kernels'
    ``v > best`` rule), which shows in the sign of a zero maximum: 0.0 then -0.0 gives 0.0."""
    rng = np.random.default_rng(3)
    x = np.where(rng.random((3, 2, 9, 8)) < 0.5, -0.0, 0.0).astype(np.float32)
    x[0, 0, :3, :3] = -1.0                                 # some windows with a single maximum too
    for k, s, p, d in (((2, 3), (2, 2), (1, 1), (2, 2)), ((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 2), (2, 1), (0, 1), (1, 3))):
        want, want_idx = ref_max(x, k, s, p, d, True)
        r = max_pool2d(to(to_layout(x, layout)), k, s, p, d, ceil_mode=True, return_indices=indices, layout=layout,
                       backend=backend)
        got = from_layout(to.host(r[0] if indices else r), layout)
        np.testing.assert_array_equal(got, want)
        assert (np.signbit(got) == np.signbit(want)).all(), (k, s, p, d, int((np.signbit(got) != np.signbit(want)).sum()))
        if indices:
            np.testing.assert_array_equal(from_layout(to.host(r[1]), layout), want_idx)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 40, 1, 1), (3, 5, 17, 19), (2, 33, 3, 2), (1, 2, 30, 31)])
def test_global_avg_pool2d(backend, to, shape, dtype, layout):
    x = data(shape, dtype, sum(shape))
    got = to.host(global_avg_pool2d(to(to_layout(x, layout)), layout, backend=backend))
    N, C, H, W = shape
    assert got.shape == ((N, C, 1, 1) if layout == "NCHW" else (N, 1, 1, C)) and got.dtype == dtype
    x64 = x.astype(np.float64)
    want = np.array([[x64[n, c].sum() / (H * W) for c in range(C)] for n in range(N)]).reshape(N, C, 1, 1)
    bound = 2 * float(np.finfo(dtype).eps) * (H * W + 2) * np.abs(x64).mean(axis=(2, 3), keepdims=True)
    assert_close_bound(from_layout(got, layout), want, bound)


def test_non_contiguous_input(backend, to):
    base = data((2, 7, 9, 3), np.float32, 8)
    x = base.transpose(0, 3, 1, 2)  # an NCHW view of NHWC memory
    want, want_idx = ref_max(np.ascontiguousarray(x), (2, 2), (2, 2), (0, 0), (1, 1), False)
    got, idx = max_pool2d(to(x), 2, return_indices=True, backend=backend)
    np.testing.assert_array_equal(to.host(got), want)
    np.testing.assert_array_equal(to.host(idx), want_idx)
    want, bound = ref_avg(np.ascontiguousarray(x), (3, 3), (1, 1), (1, 1), False, False)
    assert_close_bound(to.host(avg_pool2d(to(x), 3, 1, 1, count_include_pad=False, backend=backend)), want, bound)
    g = to.host(global_avg_pool2d(to(x), backend=backend))
    np.testing.assert_allclose(g[:, :, 0, 0], x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_size(backend, to, layout):
    def shaped(n, c, h, w):
        return np.zeros((n, c, h, w) if layout == "NCHW" else (n, h, w, c), np.float32)

    y, i = max_pool2d(to(shaped(0, 3, 8, 8)), 2, return_indices=True, layout=layout, backend=backend)
    assert to.host(y).shape == to.host(i).shape == ((0, 3, 4, 4) if layout == "NCHW" else (0, 4, 4, 3))
    y = to.host(avg_pool2d(to(shaped(2, 0, 5, 5)), 3, 1, 1, layout=layout, backend=backend))
    assert y.shape == ((2, 0, 5, 5) if layout == "NCHW" else (2, 5, 5, 0))
    y = to.host(max_pool2d(to(shaped(1, 2, 0, 5)), 2, layout=layout, backend=backend))
    assert y.shape == ((1, 2, 0, 2) if layout == "NCHW" else (1, 0, 2, 2))
    g = to.host(global_avg_pool2d(to(shaped(0, 4, 3, 3)), layout, backend=backend))
    assert g.shape == ((0, 4, 1, 1) if layout == "NCHW" else (0, 1, 1, 4))
    g = to.host(global_avg_pool2d(to(shaped(2, 3, 0, 4)), layout, backend=backend))
    assert g.shape == ((2, 3, 1, 1) if layout == "NCHW" else (2, 1, 1, 3)) and np.isnan(g).all()


def test_errors(backend, to):
    x = to(np.ones((1, 2, 6, 6), np.float32))
    with pytest.raises(ValueError, match="padding must be at most half the effective kernel size"):
        max_pool2d(x, 3, padding=2, backend=backend)
    with pytest.raises(ValueError, match="padding must be at most half"):
        avg_pool2d(x, 2, padding=(0, 2), backend=backend)
    max_pool2d(x, 2, padding=2, dilation=3, backend=backend)  # effective kernel 4: padding 2 is fine
    with pytest.raises(ValueError, match="output size is too small"):
        max_pool2d(x, 7, backend=backend)
    with pytest.raises(ValueError, match="kernel_size must be between 1 and 2147483647; got 0"):
        max_pool2d(x, 0, backend=backend)
    with pytest.raises(ValueError, match="stride must be between 1 and 2147483647; got 0"):
        avg_pool2d(x, 2, stride=(1, 0), backend=backend)
    with pytest.raises(ValueError, match="padding must be between 0 and 2147483647; got -1"):
        max_pool2d(x, 2, padding=-1, backend=backend)
    with pytest.raises(ValueError, match="dilation must be between 1 and 2147483647; got 0"):
        max_pool2d(x, 2, dilation=0, backend=backend)
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair of ints; got 3 values"):
        max_pool2d(x, (2, 2, 2), backend=backend)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints; got float"):
        avg_pool2d(x, 2.0, backend=backend)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints; got bool"):
        avg_pool2d(x, 2, stride=True, backend=backend)
    with pytest.raises(TypeError, match="ceil_mode must be a bool"):
        max_pool2d(x, 2, ceil_mode=1, backend=backend)
    with pytest.raises(TypeError, match="return_indices must be a bool"):
        max_pool2d(x, 2, return_indices="yes", backend=backend)
    with pytest.raises(TypeError, match="count_include_pad must be a bool"):
        avg_pool2d(x, 2, count_include_pad=None, backend=backend)
    with pytest.raises(ValueError, match="layout must be one of 'NCHW', 'NHWC'"):
        max_pool2d(x, 2, layout="CHWN", backend=backend)
    with pytest.raises(ValueError, match="layout must be one of"):
        global_avg_pool2d(x, "nchw", backend=backend)
    with pytest.raises(ValueError, match="x must be 4-D NHWC; got shape"):
        avg_pool2d(to(np.ones((2, 6, 6), np.float32)), 2, layout="NHWC", backend=backend)
    with pytest.raises(ValueError, match="x must be 4-D NCHW"):
        global_avg_pool2d(to(np.ones((2, 6, 6), np.float32)), backend=backend)
    with pytest.raises(TypeError, match="x has dtype int64; expected float32 or float64"):
        max_pool2d(to(np.ones((1, 1, 4, 4), np.int64)), 2, backend=backend)
    with pytest.raises(TypeError, match="x has dtype float16"):
        global_avg_pool2d(to(np.ones((1, 1, 4, 4), np.float16)), backend=backend)


@pytest.mark.parametrize("name,value,shown", [
    ("stride", 2**31, "2147483648"), ("stride", 10**30, "1000000000000000000000000000000"),
    ("padding", 2**31, "2147483648"), ("dilation", (1, 2**31), "2147483648"),
    ("kernel_size", 2**31, "2147483648"), ("dilation", np.uint64(2**64 - 1), "18446744073709551615"),
    ("stride", np.int64(-(2**40)), "-1099511627776"), ("padding", np.array(2**35, ">i8")[()], "34359738368"),
])
def test_int_parameters_range_checked_by_value(backend, to, name, value, shown):
    """Issue 17 item 5: an int parameter past the C int the kernels take is a ValueError naming it
    (an OverflowError from NumPy before), unsigned / big-endian NumPy scalars by their value."""
    x = to(np.ones((1, 2, 6, 6), np.float32))
    kw = {"kernel_size": 2, name: value}
    lo = 0 if name == "padding" else 1
    with pytest.raises(ValueError, match=rf"max_pool2d: {name} must be between {lo} and 2147483647; got {shown}"):
        max_pool2d(x, **kw, backend=backend)
    if name != "dilation":
        with pytest.raises(ValueError, match=rf"avg_pool2d: {name} must be between {lo} and 2147483647; got {shown}"):
            avg_pool2d(x, **kw, backend=backend)


def test_channel_and_plane_bounds(backend, to):
    """C and H*W beyond what the kernels' int counters allow are refused before anything is
    allocated (broadcast views: no memory)."""
    if backend == "cuda":
        pytest.skip("broadcast NumPy views stand in for huge inputs; not for CuPy arrays")
    wide = np.broadcast_to(np.float32(1), (1, 6, 6, 2**31))
    with pytest.raises(ValueError, match=r"max_pool2d: x has C = 2147483648 channels"):
        max_pool2d(wide, 2, layout="NHWC", backend=backend)
    plane = np.broadcast_to(np.float32(1), (1, 1, 1, 2**31 - 100))
    with pytest.raises(ValueError, match=r"global_avg_pool2d: .* H\*W = 2147483548 elements; each must be at most "
                                         r"2\*\*31 - 4097"):
        global_avg_pool2d(plane, backend=backend)


# -- window parameters near 2^31: 64-bit window arithmetic in the kernels, taps-only NumPy fallback ----
BIG = 2**31 - 1
# (shape NCHW, kernel, stride, padding, dilation, ceil_mode): (k - 1) * d, start + span and the
# first-tap index pass 2^31 although every window reads at most a few input elements.
HUGE_MAX_CASES = [
    ((1, 1, 1, 1), (3, 1), 1, (BIG, 0), (BIG, 1), False),        # issue 17: 5.0 at index 0
    ((1, 2, 4, 4), (2, 2), 1, (2**30 - 1, 1), (BIG, 1), False),  # no tap inside: index 2^30 * W + w
    ((1, 1, 2, 2), (3, 1), (BIG, 1), (BIG, 0), (BIG, 1), True),  # o * s - p and start + 2d past 2^31
    ((2, 1, 3, 5), (1, 3), (1, BIG), (0, 1), (1, 2), True),      # stride 2^31 - 1, ceil_mode
    ((1, 2, 1, 1), (20000, 1), (10000, 1), (10000, 0), 1, True),  # two windows far apart, one tap each
]


def address_space_cap(extra=2 << 30):
    """Lower this process's soft RLIMIT_AS to its current size plus ``extra`` for a with-block, so
    that an absurd allocation (a padded copy of 2^31 rows) fails at once instead of paging."""
    import contextlib
    import resource

    @contextlib.contextmanager
    def cap():
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    return cap()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", HUGE_MAX_CASES, ids=range(len(HUGE_MAX_CASES)))
def test_max_pool2d_huge_window_parameters(backend, to, case, layout):
    shape, k, s, p, d, ceil_mode = case
    x = data(shape, np.float32, 3)
    want, want_idx = ref_max(x, pair(k), pair(s), pair(p), pair(d), ceil_mode)
    with address_space_cap():
        got, idx = max_pool2d(to(to_layout(x, layout)), k, s, p, d, ceil_mode, True, layout, backend=backend)
    np.testing.assert_array_equal(from_layout(to.host(got), layout), want)
    np.testing.assert_array_equal(from_layout(to.host(idx), layout), want_idx)


def test_max_pool2d_issue_17_reproducer(backend, to):
    with address_space_cap():
        y, i = max_pool2d(to(np.array([[[[5.0]]]], np.float32)), (3, 1), stride=1, padding=(BIG, 0),
                          dilation=(BIG, 1), return_indices=True, backend=backend)
    assert to.host(y).tolist() == [[[[5.0]]]] and to.host(i).tolist() == [[[[0]]]]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_huge_window(backend, to, layout, count_include_pad):
    # kernel 2^31 - 1 with padding 2^30 - 1 on a 1x1 input: one window, clipped to the padded input
    # it spans 2^31 - 1 per axis, so the count_include_pad divisor is (2^31 - 1)^2 (an int product
    # overflowed); the taps inside the input are one.
    x = np.array([[[[5.0]]], [[[-3.0]]]], np.float64)
    k, p = (BIG, BIG), (2**30 - 1, 2**30 - 1)
    want, bound = ref_avg(x, k, k, p, False, count_include_pad)
    assert want.shape == (2, 1, 1, 1) and (want[0, 0, 0, 0] == 5.0 / BIG**2 if count_include_pad else 5.0)
    with address_space_cap():
        got = avg_pool2d(to(to_layout(x, layout)), k, None, p, False, count_include_pad, layout, backend=backend)
    assert_close_bound(from_layout(to.host(got), layout), want, bound)


def test_random_geometries_against_loops(backend, to):
    """Seeded random small geometries, every option, both layouts: values and indices exactly as
    the loop references, averages within their bound."""
    rng = np.random.default_rng(17)
    checked = 0
    while checked < 24:
        H, W = (int(v) for v in rng.integers(1, 7, 2))
        k = tuple(int(v) for v in rng.integers(1, 6, 2))
        s = tuple(int(v) for v in rng.integers(1, 5, 2))
        d = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, ((kk - 1) * dd + 1) // 2 + 1)) for kk, dd in zip(k, d))
        ceil_mode = bool(rng.integers(2))
        OH = out_size(H, k[0], s[0], p[0], d[0], ceil_mode)
        OW = out_size(W, k[1], s[1], p[1], d[1], ceil_mode)
        if OH < 1 or OW < 1:
            continue
        layout = LAYOUTS[checked % 2]
        x = data((2, 3, H, W), np.float32, checked)
        x[0, 0].flat[int(rng.integers(H * W))] = np.nan
        xin = to(to_layout(x, layout))
        want, want_idx = ref_max(x, k, s, p, d, ceil_mode)
        got, idx = max_pool2d(xin, k, s, p, d, ceil_mode, True, layout, backend=backend)
        np.testing.assert_array_equal(from_layout(to.host(got), layout), want)
        np.testing.assert_array_equal(from_layout(to.host(idx), layout), want_idx)
        pa = tuple(min(pp, kk // 2) for pp, kk in zip(p, k))
        if out_size(H, k[0], s[0], pa[0], 1, ceil_mode) >= 1 and out_size(W, k[1], s[1], pa[1], 1, ceil_mode) >= 1:
            cip = bool(checked % 3)
            want, bound = ref_avg(x, k, s, pa, ceil_mode, cip)
            got = avg_pool2d(xin, k, s, pa, ceil_mode, cip, layout, backend=backend)
            assert_close_bound(from_layout(to.host(got), layout), want, bound)
        checked += 1


_CAPPED = r"""
import json, resource, sys, time
import numpy as np
import pygpu_ops as po
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.RLIM_INFINITY))
one = np.ones((1, 1, 1, 1), np.float32)
times = {}
for backend in sys.argv[1:]:
    for name, call in CALLS:  # first untimed: builds (or loads) the emulator's kernel modules
        call(backend)
    for name, call in CALLS:
        t = time.perf_counter()
        call(backend)
        times[f"{name}[{backend}]"] = time.perf_counter() - t
print(json.dumps(times))
"""


def run_capped(calls: str, backends, timeout=120):
    """Runs ``CALLS`` (source defining a list of (name, fn(backend))) in a fresh interpreter whose
    address space may grow by 1 GiB only, each call once untimed and once timed; returns
    {name[backend]: seconds of the timed call}. A MemoryError or an exception of any kind fails
    the test, and so does a run past ``timeout`` seconds."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    code = _CAPPED.replace("times = {}", calls + "\ntimes = {}")
    r = subprocess.run([sys.executable, "-c", code, *backends], capture_output=True, text=True, env=env,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_numpy_and_emulator_cost_follows_the_output():
    """Issue 17 item 4: a 1x1 input with a 20001-wide window (a Python loop over 4e8 taps before),
    padding 2^30 (an 8 GiB padded copy before): each call well under a second in 1 GiB."""
    from pygpu_ops._runtime import backends

    names = ["numpy"] + (["emulator"] if backends.problem("emulator") is None else [])
    calls = """
CALLS = [
    ("avg k1201 p600", lambda b: po.avg_pool2d(one, 1201, 1, 600, backend=b)),
    ("avg k20001 p10000", lambda b: po.avg_pool2d(one, 20001, 1, 10000, count_include_pad=False, backend=b)),
    ("avg 56x56 k56", lambda b: po.avg_pool2d(np.ones((2, 8, 56, 56), np.float32), 56, backend=b)),
    ("max p2^30", lambda b: po.max_pool2d(one, (3, 1), 1, (2**30, 0), (2**30, 1), return_indices=True, backend=b)),
    ("max k20001", lambda b: po.max_pool2d(one, 20001, 1, 10000, layout="NHWC", backend=b)),
]
"""
    times = run_capped(calls, names)
    slow = {k: v for k, v in times.items() if v > 1.0}
    assert not slow, f"calls slower than 1 s: {slow}"


# -- emulator-only: shared-memory races / shuffles show up as seed-dependent results ------------------
@pytest.mark.emulator
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernels_race_free_under_two_schedules(layout):
    from pygpu_ops._runtime import backends

    if backends.problem("emulator"):
        pytest.skip(f"backend 'emulator' unavailable: {backends.problem('emulator')}")
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    x = to_layout(data((2, 37, 9, 10), np.float32, 2), layout)
    run_under_seeds(lambda: global_avg_pool2d(x, layout, backend="emulator"), seeds=(1, 2))
    x3 = to_layout(data((2, 3, 40, 41), np.float32, 3), layout)
    run_under_seeds(lambda: global_avg_pool2d(x3, layout, backend="emulator"), seeds=(3, 4))
    run_under_seeds(lambda: max_pool2d(x, 3, 2, 1, return_indices=True, layout=layout, backend="emulator"),
                    seeds=(1, 2))
    run_under_seeds(lambda: avg_pool2d(x, 3, 2, 1, True, False, layout, backend="emulator"), seeds=(1, 2))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_global_avg_pool2d_result_is_c_contiguous(backend, to, layout):
    x = np.asfortranarray(data((2, 3, 4, 5), np.float32, 9))
    y = to.host(global_avg_pool2d(to(x), layout=layout, backend=backend))
    assert y.flags.c_contiguous
