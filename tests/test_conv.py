"""im2col, conv2d, conv1d and the NCHW <-> NHWC transposes on every backend.

References are written here in float64: im2col from its definition (one loop per column entry),
convolution as a direct sum over (channel, kernel row, kernel column) of shifted input slices,
with its own padding rule for "same" (the im2col path is never used as a reference).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close_bound
from pygpu_ops import conv as cv


# -- references ---------------------------------------------------------------------------------
def pads_of(padding, k, d):
    """(before, after) per spatial dimension; 'same' as PyTorch: extra padding after."""
    if padding == "valid":
        return [(0, 0) for _ in k]
    if padding == "same":
        out = []
        for kk, dd in zip(k, d):
            total = dd * (kk - 1)
            out.append((total // 2, total - total // 2))
        return out
    p = (padding,) * len(k) if isinstance(padding, int) else tuple(padding)
    return [(v, v) for v in p]


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv2d_nchw(x, w, b, stride, padding, dilation, groups, relu):
    """(result, error bound); x (N, C, H, W), w (O, C/groups, kh, kw), direct summation."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (pt, pb), (pl, pr) = pads_of(padding, (KH, KW), (dh, dw))
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    out = np.zeros((N, O, OH, OW))
    mag = np.zeros((N, O, OH, OW))
    Og = O // groups
    for o in range(O):
        g = o // Og
        for c in range(Cg):
            for i in range(KH):
                for j in range(KW):
                    sl = xp[:, g * Cg + c, i * dh:i * dh + sh * (OH - 1) + 1:sh, j * dw:j * dw + sw * (OW - 1) + 1:sw]
                    out[:, o] += float(w[o, c, i, j]) * sl
                    mag[:, o] += abs(float(w[o, c, i, j])) * np.abs(sl)
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
        mag += np.abs(b.astype(np.float64))[None, :, None, None]
    if relu:
        out = np.maximum(out, 0)  # keeps NaN
    K = Cg * KH * KW
    return out, 2 * (K + 2) * np.finfo(np.float32).eps * mag


def ref_conv2d(x, w, b, stride, padding, dilation, groups, relu, layout):
    if layout == "NCHW":
        return ref_conv2d_nchw(x, w, b, stride, padding, dilation, groups, relu)
    out, bound = ref_conv2d_nchw(x.transpose(0, 3, 1, 2), w.transpose(0, 3, 1, 2), b, stride, padding,
                                 dilation, groups, relu)
    return out.transpose(0, 2, 3, 1), bound.transpose(0, 2, 3, 1)


def ref_im2col(x, k, stride, padding, dilation, layout):
    """From the definition, one entry at a time (float64 copy of the values)."""
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    N, C, H, W = x.shape
    KH, KW = k
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    (pt, pb), (pl, pr) = pads_of(padding, (KH, KW), (dh, dw))
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    if layout == "NCHW":
        col = np.zeros((N, C * KH * KW, OH * OW), x.dtype)
    else:
        col = np.zeros((N, OH * OW, KH * KW * C), x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    for oh in range(OH):
                        for ow in range(OW):
                            h, w_ = oh * sh - pt + i * dh, ow * sw - pl + j * dw
                            v = x[n, c, h, w_] if 0 <= h < H and 0 <= w_ < W else 0
                            if layout == "NCHW":
                                col[n, (c * KH + i) * KW + j, oh * OW + ow] = v
                            else:
                                col[n, oh * OW + ow, (i * KW + j) * C + c] = v
    return col


def make(rng, layout, N, C, H, W, O, k, groups, bias):
    KH, KW = pair(k)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C // groups, KH, KW)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32) if bias else None
    if layout == "NHWC":
        x, w = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    return x, w, b


# -- im2col on its own first -----------------------------------------------------------------------
# (N, C, H, W, kernel, stride, padding, dilation)
IM2COL_CASES = [
    (1, 1, 1, 1, 1, 1, 0, 1),
    (2, 3, 5, 7, (2, 3), 1, 1, 1),
    (1, 2, 6, 5, 3, (2, 1), (0, 2), 1),
    (3, 2, 7, 6, (3, 2), 1, "same", (2, 1)),
    (1, 4, 9, 8, 2, 3, 0, 1),
    (2, 1, 4, 4, 4, 1, "valid", 1),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", IM2COL_CASES, ids=lambda c: "x".join(map(str, c[:4])) + f"-k{c[4]}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col(backend, to, layout, case, dtype):
    N, C, H, W, k, s, p, d = case
    rng = np.random.default_rng(N * 100 + C * 10 + H)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    got = to.host(cv.im2col(to(x), k, stride=s, padding=p, dilation=d, layout=layout, backend=backend))
    want = ref_im2col(x, pair(k), s, p, d, layout)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # a pure copy: bit-exact


def test_im2col_non_contiguous_and_empty(backend, to):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    x = to(big)[:, :, 1::2, ::3]
    got = to.host(cv.im2col(x, 2, padding=1, backend=backend))
    np.testing.assert_array_equal(got, ref_im2col(big[:, :, 1::2, ::3], (2, 2), 1, 1, 1, "NCHW"))
    empty = to.host(cv.im2col(to(np.zeros((0, 3, 4, 4), np.float32)), 3, backend=backend))
    assert empty.shape == (0, 27, 4)


# -- conv2d ------------------------------------------------------------------------------------------
# (N, C, H, W, O, kernel, stride, padding, dilation, groups, bias, relu)
CONV_CASES = {
    "1x1": (1, 3, 5, 7, 4, 1, 1, 0, 1, 1, True, False),
    "nonsquare": (3, 2, 7, 6, 5, (2, 3), 1, (1, 0), 1, 1, True, True),
    "stride_gt_kernel": (1, 3, 9, 11, 3, 2, 3, 0, 1, 1, False, False),
    "strided_pair": (2, 4, 8, 9, 6, (3, 1), (2, 3), 1, 1, 2, True, True),
    "dilation": (1, 2, 9, 8, 3, 3, 1, 2, (2, 3), 1, True, False),
    "same_even": (3, 3, 5, 7, 4, (2, 4), 1, "same", 1, 1, True, True),
    "same_dilated": (1, 4, 6, 5, 4, (3, 2), 1, "same", (1, 3), 2, False, True),
    "valid": (2, 1, 6, 6, 2, 3, 1, "valid", 1, 1, True, False),
    "groups": (1, 6, 5, 5, 9, 3, 1, 1, 1, 3, True, True),
    "depthwise": (3, 5, 7, 6, 10, 3, 2, 1, 1, 5, True, False),
    "C1_batch1": (1, 1, 7, 5, 3, (3, 2), 1, 0, 1, 1, False, True),
    "kernel_is_input": (2, 3, 4, 5, 2, (4, 5), 1, 0, 1, 1, True, False),
    "wide_tail": (1, 3, 13, 17, 7, 3, 1, 1, 1, 1, True, True),
    "padding_gt_input": (1, 2, 2, 3, 3, 3, 1, 4, 1, 1, True, False),
    "dilation_gt_input": (2, 2, 3, 4, 3, (2, 3), (1, 2), (3, 2), (4, 3), 1, True, True),
    "stride_gt_input": (1, 3, 4, 3, 2, 2, 5, 2, 1, 1, False, False),
    "taps_only_in_padding": (2, 4, 2, 2, 4, 5, (1, 2), 6, 3, 2, True, False),
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d(backend, to, layout, name):
    N, C, H, W, O, k, s, p, d, G, bias, relu = CONV_CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x, w, b = make(rng, layout, N, C, H, W, O, k, G, bias)
    got = cv.conv2d(to(x), to(w), None if b is None else to(b), stride=s, padding=p, dilation=d, groups=G,
                    layout=layout, activation="relu" if relu else None, backend=backend)
    assert got.dtype == np.float32
    want, bound = ref_conv2d(x, w, b, s, p, d, G, relu, layout)
    assert_close_bound(to.host(got), want, bound, f"{name} {layout}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv_epilogue_leaky_relu(backend, to, layout):
    """The epilogue's leaky-ReLU mode (internal: the public API exposes None and "relu")."""
    rng = np.random.default_rng(4)
    x, w, b = make(rng, layout, 2, 4, 6, 7, 8, 3, 2, True)
    x[0, 1, 2, 3] = np.nan
    shape = x.shape if layout == "NCHW" else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    g = cv._geometry("conv2d", *shape, 8, 2, 3, 3, 1, 1, 1)
    got = to.host(cv._conv("conv2d", backend, to(x), to(w), to(b), g, layout, 2, 0.25))
    with np.errstate(invalid="ignore"):
        lin, bound = ref_conv2d(x, w, b, 1, 1, 1, 2, False, layout)
        want = np.where(lin < 0, 0.25 * lin, lin)
        assert np.isnan(got).sum() == np.isnan(want).sum() > 0
        assert_close_bound(got, want, bound, layout)


# (N, C, H, W, O, kernel, stride, padding, groups): odd sizes, no tile multiple, one pixel, depthwise
RELU6_CASES = [(1, 1, 1, 1, 1, 1, 1, 0, 1), (3, 5, 7, 9, 13, 3, 1, 1, 1), (2, 6, 5, 11, 6, (2, 3), 2, 1, 3),
               (5, 3, 4, 3, 129, 1, 1, 0, 1), (2, 4, 6, 5, 4, 3, 1, "same", 4)]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", RELU6_CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv2d_relu6(backend, to, layout, case):
    """activation="relu6": min(max(v, 0), 6) in the epilogue. Inputs scaled so that many outputs
    pass 6, a NaN in x (its outputs stay NaN, as under relu), a bias of -inf and one of +inf on two
    channels (0 and 6 everywhere)."""
    N, C, H, W, O, k, s, p, G = case
    rng = np.random.default_rng(sum(case[:5]))
    x, w, b = make(rng, layout, N, C, H, W, O, k, G, True)
    x *= 4
    x.reshape(-1)[x.size // 2] = np.nan
    if O > 2:
        b[1], b[2] = -np.inf, np.inf
    got = to.host(cv.conv2d(to(x), to(w), to(b), stride=s, padding=p, groups=G, layout=layout, activation="relu6",
                            backend=backend))
    with np.errstate(invalid="ignore"):
        lin, bound = ref_conv2d(x, w, b, s, p, 1, G, False, layout)
        want = np.minimum(np.maximum(lin, 0), 6)           # both keep NaN
        bound = np.where(np.isfinite(bound), bound, 0)
        assert np.isnan(got).sum() == np.isnan(want).sum() > 0
        assert ((want == 6).sum() > 0 or want.size < 4) and (got <= 6).sum() == (~np.isnan(got)).sum()
        assert_close_bound(got, want, bound, f"{case} {layout}")


def test_conv1d_and_empty_input_relu6(backend, to):
    """conv1d takes relu6 too; a C = 0 conv is relu6(bias) everywhere (the fill path)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 11)).astype(np.float32) * 4
    w = rng.standard_normal((7, 4, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    got = to.host(cv.conv1d(to(x), to(w), to(b), padding=1, activation="relu6", backend=backend))
    lin, bound = ref_conv2d_nchw(x[:, :, None], w[:, :, None], b, 1, (0, 1), 1, 1, False)
    assert_close_bound(got, np.minimum(np.maximum(lin[:, :, 0], 0), 6), bound[:, :, 0], "conv1d")
    bias = np.array([7.5, -2.0, np.nan, 3.0], np.float32)
    r = to.host(cv.conv2d(to(np.ones((1, 0, 3, 3), np.float32)), to(np.ones((4, 0, 1, 1), np.float32)), to(bias),
                          activation="relu6", backend=backend))
    np.testing.assert_array_equal(r[0, :, 1, 2], [6.0, 0.0, np.nan, 3.0])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (37, 1, 1, 5, 3), (3, 7, 5, 9, 130)], ids=str)
def test_conv2d_nhwc_pointwise_reads_x_directly(backend, to, monkeypatch, shape):
    """A 1x1, stride-1, unpadded, one-group NHWC conv2d (a Gemm, x (M, K) as (M, 1, 1, K)) runs the
    GEMM on x itself: no im2col launch; a NaN in x reaches its row only."""
    N, H, W, C, O = shape
    rng = np.random.default_rng(sum(shape))
    x, w, b = make(rng, "NHWC", N, C, H, W, O, 1, 1, True)
    x[-1, -1, -1, -1] = np.nan
    launches = []
    if backend != "numpy":
        from pygpu_ops._runtime.device import get_device

        dev = get_device(backend)
        orig = dev.launch
        monkeypatch.setattr(dev, "launch", lambda k, l, a: (launches.append(k.symbol), orig(k, l, a))[1])
    got = to.host(cv.conv2d(to(x), to(w), to(b), layout="NHWC", activation="relu6", backend=backend))
    with np.errstate(invalid="ignore"):
        lin, bound = ref_conv2d(x, w, b, 1, 0, 1, 1, False, "NHWC")
        assert_close_bound(got, np.minimum(np.maximum(lin, 0), 6), bound, str(shape))
    assert np.isnan(got[-1, -1, -1]).all() and not np.isnan(got.reshape(-1, O)[:-1]).any()
    if backend != "numpy":
        assert launches == ["conv_gemm_warptile"], launches


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_chunked_column_buffer(backend, to, layout, monkeypatch):
    """A tiny column-buffer limit: same result, the work split into many chunks (some crossing
    image boundaries, some smaller than one image)."""
    rng = np.random.default_rng(12)
    x, w, b = make(rng, layout, 3, 4, 6, 5, 6, 3, 2, True)
    want, bound = ref_conv2d(x, w, b, 1, 1, 1, 2, True, layout)
    launches = []
    if backend != "numpy":
        from pygpu_ops._runtime.device import get_device

        dev = get_device(backend)
        orig = dev.launch
        monkeypatch.setattr(dev, "launch", lambda k, l, a: (launches.append(k.symbol), orig(k, l, a))[1])
    # One pixel's column is C*kh*kw*4 = 144 bytes: 8 pixels per chunk for the device path (90
    # pixels of 30 per image in 12 chunks, most crossing an image boundary or inside one image);
    # the NumPy path splits images into blocks of output rows.
    prev = cv.set_column_buffer_limit(8 * 144)
    try:
        got = cv.conv2d(to(x), to(w), to(b), padding=1, groups=2, layout=layout, activation="relu",
                        backend=backend)
    finally:
        cv.set_column_buffer_limit(prev)
    assert cv.get_column_buffer_limit() == prev == cv.DEFAULT_COLUMN_BUFFER_LIMIT
    assert_close_bound(to.host(got), want, bound, layout)
    if backend != "numpy":
        im2col = "im2col_" + layout.lower()
        assert launches.count(im2col) == 12 and launches.count("conv_gemm_warptile") == 12, launches


@pytest.mark.parametrize("out_hw", [(1, 1), (1, 2), (1, 3), (2, 3), (1, 5)])
@pytest.mark.parametrize("per_chunk", [None, 5])
def test_conv2d_few_pixels_per_image_crosses_images_in_a_column_group(backend, to, out_hw, per_chunk):
    """OH*OW of 1 .. 6 pixels: every group of 4 GEMM columns of the NCHW epilogue spans several
    images (P < 4: more than one step to the next image inside one group), and with 5 pixels per
    chunk the chunks start mid-image (p0 != 0), so the epilogue's division of p0 + col by P and
    its stepping to the next image are both exercised."""
    rng = np.random.default_rng(sum(out_hw) * 7 + (per_chunk or 0))
    OH, OW = out_hw
    x, w, b = make(rng, "NCHW", 11, 3, OH + 2, OW + 1, 5, (3, 2), 1, True)
    want, bound = ref_conv2d(x, w, b, 1, 0, 1, 1, True, "NCHW")
    prev = cv.set_column_buffer_limit(per_chunk * 3 * 3 * 2 * 4 if per_chunk else cv.DEFAULT_COLUMN_BUFFER_LIMIT)
    try:
        got = to.host(cv.conv2d(to(x), to(w), to(b), layout="NCHW", activation="relu", backend=backend))
    finally:
        cv.set_column_buffer_limit(prev)
    assert got.shape == (11, 5, OH, OW)
    assert_close_bound(got, want, bound, f"{out_hw} {per_chunk}")


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6, 7, 25, 641, 2**16 + 1, 2**30, 2**31 - 257, 2**31 - 1,
                               2**31, 2**31 + 1, 3 * 2**30 + 7, 2**32 - 2, 2**32 - 1])
def test_fastdiv_magic_is_exact_for_every_32_bit_dividend(d):
    """The conv GEMM's division of x = p0 + col (< 2^32) by P as the kernel computes it, in uint32
    arithmetic, against integer division: the dividends at every multiple of d near the ends of
    the range, the largest ones, and random ones."""
    magic, sh1, sh2 = cv._fastdiv_magic(d)
    assert 0 < magic < 2**32 and sh1 in (0, 1) and 0 <= sh2 < 32
    rng = np.random.default_rng(d % 2**32)
    xs = [0, 1, d - 1, d, d + 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]
    top = (2**32 - 1) // d * d
    xs += [v for m in range(0, 3) for v in (m * d - 1, m * d, top - m * d - 1, top - m * d)]
    xs = np.array([v for v in xs if 0 <= v < 2**32] + list(rng.integers(0, 2**32, 20000)), np.uint64)
    t = (xs * np.uint64(magic)) >> np.uint64(32)                     # __umulhi, exact in uint64
    q = (t + ((xs - t) >> np.uint64(sh1))) >> np.uint64(sh2)
    np.testing.assert_array_equal(q, xs // np.uint64(d))
    assert ((t + ((xs - t) >> np.uint64(sh1))) < 2**32).all()        # no 32-bit overflow inside
    for bad in (0, 2**32):
        with pytest.raises(ValueError, match="d must be in"):
            cv._fastdiv_magic(bad)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_numpy_per_tap_path_on_every_case(layout, monkeypatch):
    """The NumPy fallback copies one strided slice per tap (no padded copy) when padding is not
    cheap; force that path on every conv2d and im2col case (the huge-padding tests reach it
    naturally)."""
    monkeypatch.setattr(cv, "_padding_is_cheap", lambda g, columns: False)
    for name, (N, C, H, W, O, k, s, p, d, G, bias, relu) in CONV_CASES.items():
        x, w, b = make(np.random.default_rng(len(name)), layout, N, C, H, W, O, k, G, bias)
        got = cv.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=G, layout=layout,
                        activation="relu" if relu else None, backend="numpy")
        want, bound = ref_conv2d(x, w, b, s, p, d, G, relu, layout)
        assert_close_bound(got, want, bound, f"{name} {layout}")
    # in chunks of one output row (the per-tap copies clipped to each chunk's rows)
    N, C, H, W, O, k, s, p, d, G, bias, relu = CONV_CASES["wide_tail"]
    x, w, b = make(np.random.default_rng(5), layout, 2, C, H, W, O, k, G, bias)
    prev = cv.set_column_buffer_limit(2000)
    try:
        got = cv.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=G, layout=layout, backend="numpy")
    finally:
        cv.set_column_buffer_limit(prev)
    want, bound = ref_conv2d(x, w, b, s, p, d, G, False, layout)
    assert_close_bound(got, want, bound, f"chunked {layout}")
    for N, C, H, W, k, s, p, d in IM2COL_CASES:
        x = np.random.default_rng(H).standard_normal((N, C, H, W) if layout == "NCHW" else (N, H, W, C))
        got = cv.im2col(x, k, stride=s, padding=p, dilation=d, layout=layout, backend="numpy")
        np.testing.assert_array_equal(got, ref_im2col(x, pair(k), s, p, d, layout))


def test_conv2d_numpy_chunks_cover_everything():
    g = cv._geometry("t", 3, 4, 6, 5, 6, 2, 3, 3, 1, 1, 1)
    prev = cv.set_column_buffer_limit(2 * 144 * 5)  # two output rows of one image
    try:
        pieces = list(cv._numpy_chunks(g, 144))
    finally:
        cv.set_column_buffer_limit(prev)
    assert len(pieces) == 9 and all(n1 == n0 + 1 for n0, n1, _, _ in pieces)
    cover = np.zeros((3, 6), int)
    for n0, n1, h0, h1 in pieces:
        cover[n0:n1, h0:h1] += 1
    assert (cover == 1).all()


def test_conv2d_nan_inf_and_non_contiguous(backend, to):
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((2, 3, 9, 16)).astype(np.float32)
    xb[0, 1, 4, 6] = np.nan
    xb[1, 2, 2, 2] = np.inf
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    wb = np.repeat(w, 2, axis=0)  # w is every other output channel of wb
    b = rng.standard_normal(4).astype(np.float32)
    x = xb[:, :, :, ::2]          # (2, 3, 9, 8), non-contiguous
    got = to.host(cv.conv2d(to(xb)[:, :, :, ::2], to(wb)[::2], to(b), padding=1, activation="relu",
                            backend=backend))
    with np.errstate(invalid="ignore"):
        want, bound = ref_conv2d(np.ascontiguousarray(x), w, b, 1, 1, 1, 1, True, "NCHW")
    assert np.isnan(got[0, :, 3:6, 2:5]).all()     # NaN survives the ReLU epilogue
    with np.errstate(invalid="ignore"):
        assert_close_bound(got, want, bound)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_conv2d_zero_size_and_empty_reduction(backend, to, layout):
    nchw = layout == "NCHW"

    def x_of(N, C, H, W):
        return to(np.ones((N, C, H, W) if nchw else (N, H, W, C), np.float32))

    def w_of(O, Cg, kh, kw):
        return to(np.ones((O, Cg, kh, kw) if nchw else (O, kh, kw, Cg), np.float32))

    r = to.host(cv.conv2d(x_of(0, 3, 5, 5), w_of(2, 3, 3, 3), layout=layout, backend=backend))
    assert r.shape == ((0, 2, 3, 3) if nchw else (0, 3, 3, 2))
    r = to.host(cv.conv2d(x_of(2, 3, 5, 5), w_of(0, 3, 3, 3), layout=layout, backend=backend))
    assert r.shape == ((2, 0, 3, 3) if nchw else (2, 3, 3, 0))
    b = np.array([1.5, -2.0], np.float32)
    # C = 0: nothing to sum, the result is act(bias).
    r = to.host(cv.conv2d(x_of(1, 0, 4, 4), w_of(2, 0, 3, 3), to(b), padding=1, layout=layout,
                          activation="relu", backend=backend))
    want = np.array([1.5, 0.0])[:, None, None] if nchw else np.array([1.5, 0.0])
    np.testing.assert_array_equal(r[0], np.broadcast_to(want, r[0].shape))
    # H = 0 with padding: every window is padding.
    r = to.host(cv.conv2d(x_of(1, 2, 0, 3), w_of(2, 2, 2, 2), to(b), padding=1, layout=layout, backend=backend))
    assert r.shape == ((1, 2, 1, 4) if nchw else (1, 1, 4, 2))
    np.testing.assert_array_equal(r[0], np.broadcast_to(b[:, None, None] if nchw else b, r[0].shape))


def test_small_cnn_both_layouts(backend, to):
    """A small CNN through the public API: conv+ReLU, depthwise strided conv, 1x1 conv, in NCHW and
    in NHWC (with the layout transposes at the ends); both agree with the reference."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = (rng.standard_normal((8, 1, 3, 3)) * 0.5).astype(np.float32)
    w3 = (rng.standard_normal((5, 8, 1, 1)) * 0.5).astype(np.float32)
    b3 = rng.standard_normal(5).astype(np.float32)

    h, _ = ref_conv2d_nchw(x, w1, b1, 1, "same", 1, 1, True)
    h, _ = ref_conv2d_nchw(h, w2, None, 2, 1, 1, 8, True)
    want, _ = ref_conv2d_nchw(h, w3, b3, 1, 0, 1, 1, False)
    tol = 1e-4 * (1 + np.abs(want))

    y = cv.conv2d(to(x), to(w1), to(b1), padding="same", activation="relu", backend=backend)
    y = cv.conv2d(y, to(w2), stride=2, padding=1, groups=8, activation="relu", backend=backend)
    y = cv.conv2d(y, to(w3), to(b3), backend=backend)
    assert_close_bound(to.host(y), want, tol, "NCHW")

    def nhwc_w(w):
        return to(np.ascontiguousarray(w.transpose(0, 2, 3, 1)))

    z = cv.nchw_to_nhwc(to(x), backend=backend)
    z = cv.conv2d(z, nhwc_w(w1), to(b1), padding="same", layout="NHWC", activation="relu", backend=backend)
    z = cv.conv2d(z, nhwc_w(w2), stride=2, padding=1, groups=8, layout="NHWC", activation="relu", backend=backend)
    z = cv.conv2d(z, nhwc_w(w3), to(b3), layout="NHWC", backend=backend)
    z = cv.nhwc_to_nchw(z, backend=backend)
    assert_close_bound(to.host(z), want, tol, "NHWC")


# -- conv1d ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [
    (2, 3, 17, 4, 3, 1, 0, 1, 1, True, False),
    (1, 4, 9, 6, 4, 1, "same", 2, 2, True, True),
    (3, 1, 8, 2, 1, 3, 2, 1, 1, False, True),
    (1, 6, 12, 6, 5, 2, 2, 2, 6, True, False),
], ids=["plain", "same_even_dilated_groups", "1x1_stride", "depthwise"])
def test_conv1d(backend, to, case):
    N, C, L, O, K, s, p, d, G, bias, relu = case
    rng = np.random.default_rng(L)
    x = rng.standard_normal((N, C, L)).astype(np.float32)
    w = rng.standard_normal((O, C // G, K)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32) if bias else None
    got = to.host(cv.conv1d(to(x), to(w), None if b is None else to(b), stride=s, padding=p, dilation=d,
                            groups=G, activation="relu" if relu else None, backend=backend))
    p2 = p if isinstance(p, str) else (0, p)
    want, bound = ref_conv2d_nchw(x[:, :, None], w[:, :, None], b, (1, s), p2, (1, d), G, relu)
    assert_close_bound(got, want[:, :, 0], bound[:, :, 0])


# -- transposes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 33, 9, 7), (3, 4, 1, 65), (0, 3, 2, 2)])
def test_layout_transposes(backend, to, dtype, shape):
    x = (np.random.default_rng(7).standard_normal(shape) * 50).astype(dtype)
    got = to.host(cv.nchw_to_nhwc(to(x), backend=backend))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x.transpose(0, 2, 3, 1))
    back = to.host(cv.nhwc_to_nchw(to(got), backend=backend))
    np.testing.assert_array_equal(back, x)
    xs = to(x)[:, ::-1]  # a non-contiguous input
    np.testing.assert_array_equal(to.host(cv.nchw_to_nhwc(xs, backend=backend)), x[:, ::-1].transpose(0, 2, 3, 1))


# -- errors ------------------------------------------------------------------------------------------
def test_errors(backend, to):
    f = np.float32
    x = to(np.ones((1, 4, 5, 5), f))
    xh = to(np.ones((1, 5, 5, 4), f))
    w = to(np.ones((6, 2, 3, 3), f))
    with pytest.raises(ValueError, match=r"x has 4 channels.*not divisible by groups=3; expected a multiple of 3"):
        cv.conv2d(x, to(np.ones((6, 1, 3, 3), f)), groups=3, backend=backend)
    with pytest.raises(ValueError,
                       match=r"w has shape \(6, 2, 3, 3\); expected \(O, C/groups, kh, kw\) = \(O, 4, kh, kw\)"):
        cv.conv2d(x, w, backend=backend)
    # NCHW-shaped weights for an NHWC input.
    with pytest.raises(ValueError,
                       match=r"w has shape \(6, 2, 3, 3\); expected \(O, kh, kw, C/groups\) = \(O, kh, kw, 2\)"):
        cv.conv2d(xh, w, groups=2, layout="NHWC", backend=backend)
    with pytest.raises(ValueError, match=r"O=5 output channels, not divisible by groups=2; expected \(O, 2, kh, kw\)"):
        cv.conv2d(x, to(np.ones((5, 2, 3, 3), f)), groups=2, backend=backend)
    with pytest.raises(ValueError, match=r"kernel \(7, 3\).*spans \(7, 3\), larger than the padded input \(6, 8\).*"
                                         r"expected a padded input of at least \(7, 3\)"):
        cv.conv2d(to(np.ones((1, 4, 4, 6), f)), to(np.ones((2, 4, 7, 3), f)), padding=1, backend=backend)
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) with dilation \(3, 3\) spans \(7, 7\)"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), dilation=3, backend=backend)
    with pytest.raises(ValueError, match=r"padding must be between 0 and 2147483647; got -1"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), padding=-1, backend=backend)
    with pytest.raises(ValueError, match=r"padding must be between 0 and 2147483647; got -2"):
        cv.im2col(x, 3, padding=(1, -2), backend=backend)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), padding="same", stride=2, backend=backend)
    with pytest.raises(ValueError, match="padding must be an int, a tuple, 'valid' or 'same'"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), padding="full", backend=backend)
    with pytest.raises(ValueError, match=r"stride must be between 1 and 2147483647; got 0"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), stride=0, backend=backend)
    with pytest.raises(ValueError, match=r"bias has shape \(3,\); expected \(2,\)"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), to(np.ones(3, f)), backend=backend)
    with pytest.raises(ValueError, match="activation must be None or 'relu' or 'relu6'; got 'gelu'"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), activation="gelu", backend=backend)
    with pytest.raises(ValueError, match="layout must be one of"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), layout="CHWN", backend=backend)
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, H, W, C\)"):
        cv.conv2d(to(np.ones((4, 5, 5), f)), w, layout="NHWC", backend=backend)
    with pytest.raises(TypeError, match="x has dtype float64; expected float32"):
        cv.conv2d(to(np.ones((1, 4, 5, 5))), to(np.ones((2, 4, 3, 3))), backend=backend)
    with pytest.raises(TypeError, match="w has dtype float64; expected float32"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3))), backend=backend)
    with pytest.raises(TypeError, match="stride must be an int or a tuple of 2 ints"):
        cv.conv2d(x, to(np.ones((2, 4, 3, 3), f)), stride=(1, 1, 1), backend=backend)
    with pytest.raises(ValueError, match=r"w has shape \(2, 4, 3, 3\); expected \(O, C/groups, K\) = \(O, 4, K\)"):
        cv.conv1d(to(np.ones((1, 4, 9), f)), to(np.ones((2, 4, 3, 3), f)), backend=backend)
    with pytest.raises(ValueError, match=r"kernel \(10,\).*expected a padded length of at least \(10,\)"):
        cv.conv1d(to(np.ones((1, 4, 9), f)), to(np.ones((2, 4, 10), f)), backend=backend)
    with pytest.raises(ValueError, match=r"x must be 4-D \(N, C, H, W\)"):
        cv.nchw_to_nhwc(to(np.ones((3, 4, 5), f)), backend=backend)
    with pytest.raises(TypeError, match="x has dtype complex128"):
        cv.nhwc_to_nchw(to(np.ones((1, 2, 2, 2), complex)), backend=backend)
    with pytest.raises(TypeError, match="x has dtype int32; expected float32 or float64"):
        cv.im2col(to(np.ones((1, 1, 3, 3), np.int32)), 2, backend=backend)
    with pytest.raises(ValueError, match="nbytes must be a positive int"):
        cv.set_column_buffer_limit(0)


# -- issue 17: huge parameters, zero-size kernels, memory and time --------------------------------------
def ref_conv_direct(x, w, stride, pads, dilation, OH, OW):
    """NCHW, groups 1, float64: each output a sum over the taps inside the input, by definition
    (no padded copy, so huge padding and dilation cost nothing here)."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    out = np.zeros((N, O, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            for i in range(KH):
                for j in range(KW):
                    h = oh * stride[0] - pads[0] + i * dilation[0]
                    v = ow * stride[1] - pads[1] + j * dilation[1]
                    if 0 <= h < H and 0 <= v < W:
                        out[:, :, oh, ow] += x[:, :, h, v].astype(np.float64) @ w[:, :, i, j].T.astype(np.float64)
    return out


BIGD = 2**30
# (x NCHW shape, kernel, stride, padding, dilation): window arithmetic near 2^31, padded inputs of
# up to 2^31 - 1 per axis (an np.pad of them needed exabytes); a few taps inside the input.
HUGE_CONV = [
    ((1, 2, 4, 4), (2, 2), BIGD, BIGD - 3, BIGD),                    # only tap (1, 1) reads x[3, 3]
    ((2, 3, 5, 4), (3, 2), (BIGD, 1), (BIGD - 3, 1), (BIGD - 2, 2)),  # padded H = 2^31 - 1
    ((1, 1, 3, 6), (1, 3), (1, 2**31 - 1), (0, 2**30 - 4), (1, 2**29)),
    ((1, 2, 1, 5), (1, 3), (1, BIGD), (0, BIGD - 3), (1, BIGD - 2)),  # also as conv1d
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", HUGE_CONV, ids=range(len(HUGE_CONV)))
def test_conv_and_im2col_huge_padding_and_dilation(backend, to, layout, case):
    from test_pooling import address_space_cap

    shape, k, s, p, d = case
    out_hw = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                   for n, kk, ss, pp, dd in zip(shape[2:], k, pair(s), pair(p), pair(d)))
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((3, shape[1]) + k).astype(np.float32)
    want = ref_conv_direct(x, w, pair(s), pair(p), pair(d), *out_hw)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    win = w if layout == "NCHW" else np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    with address_space_cap():
        got = to.host(cv.conv2d(to(xin), to(win), stride=s, padding=p, dilation=d, layout=layout, backend=backend))
        col = to.host(cv.im2col(to(xin), k, stride=s, padding=p, dilation=d, layout=layout, backend=backend))
    if layout == "NHWC":
        got = got.transpose(0, 3, 1, 2)
    bound = 4 * np.finfo(np.float32).eps * (1 + ref_conv_direct(np.abs(x), np.abs(w), pair(s), pair(p), pair(d),
                                                                 *out_hw))
    assert got.shape == want.shape
    assert_close_bound(got, want, bound)
    np.testing.assert_array_equal(col, ref_im2col(x if layout == "NCHW" else xin, k, s, p, d, layout))
    if shape[2] == 1 and k[0] == 1 and layout == "NCHW":  # the same as conv1d
        with address_space_cap():
            got1 = to.host(cv.conv1d(to(x[:, :, 0]), to(w[:, :, 0]), stride=pair(s)[1], padding=pair(p)[1],
                                     dilation=pair(d)[1], backend=backend))
        assert_close_bound(got1, want[:, :, 0], bound[:, :, 0])


def test_conv1d_huge_dilation(backend, to):
    from test_pooling import address_space_cap

    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    # Padded length 2^31 - 1; taps at -p + {0, d, 2d} = {-(2^30 - 2), 1, 2^30}: only the middle one
    # reads the input, x[..., 1].
    with address_space_cap():
        got = to.host(cv.conv1d(to(x), to(w), stride=2**30, padding=2**30 - 2, dilation=2**30 - 1,
                                backend=backend))
    want = (x[:, :, 1].astype(np.float64) @ w[:, :, 1].T.astype(np.float64))[:, :, None]
    assert got.shape == (2, 4, 1)
    bound = 4 * np.finfo(np.float32).eps * (1 + np.abs(x[:, :, 1]) @ np.abs(w[:, :, 1]).T)[:, :, None]
    assert_close_bound(got, want, bound)


def test_axis_taps_lists_exactly_the_taps_inside_the_input():
    """axis_taps (the NumPy fallbacks' plan) against brute force: every (tap, output) pair whose
    position lies in [0, L), no other; random small geometries and a few far-apart outputs with
    a long window (its second branch)."""
    def brute(L, O, k, s, p, d):
        return {(i, o) for o in range(O) for i in range(k) if 0 <= o * s - p + i * d < L}

    def listed(L, O, k, s, p, d):
        pairs = set()
        for i, o0, o1, t0 in cv.axis_taps(L, O, k, s, p, d):
            assert o0 < o1 and t0 == o0 * s - p + i * d
            pairs |= {(i, o) for o in range(o0, o1)}
        return pairs

    rng = np.random.default_rng(3)
    for _ in range(400):
        L, O, k, s, d = (int(v) for v in rng.integers(1, 9, 5))
        p = int(rng.integers(0, 12))
        assert listed(L, O, k, s, p, d) == brute(L, O, k, s, p, d), (L, O, k, s, p, d)
    for L, O, k, s, p, d in [(1, 2, 20000, 10000, 10000, 1), (3, 3, 9000, 4000, 4100, 1), (2, 4, 3000, 900, 1500, 2)]:
        assert listed(L, O, k, s, p, d) == brute(L, O, k, s, p, d), (L, O, k, s, p, d)
    assert cv.axis_taps(1, 1, 20001, 1, 10000, 1) == [(10000, 0, 1, 0)]
    assert cv.axis_taps(0, 3, 3, 1, 1, 1) == [] and cv.axis_taps(5, 0, 3, 1, 1, 1) == []


@pytest.mark.parametrize("name,value,shown", [
    ("stride", 2**31, "2147483648"), ("stride", 10**30, "1000000000000000000000000000000"),
    ("padding", 2**31, "2147483648"), ("dilation", (1, 2**31), "2147483648"),
    ("dilation", np.uint64(2**64 - 1), "18446744073709551615"), ("stride", np.int64(-(2**40)), "-1099511627776"),
    ("padding", np.array(2**35, ">i8")[()], "34359738368"), ("groups", 2**31, "2147483648"),
])
def test_int_parameters_range_checked_by_value(backend, to, name, value, shown):
    """Issue 17 item 5: past the C int the kernels take is a ValueError naming the parameter (an
    OverflowError from NumPy before); unsigned / big-endian NumPy scalars by their value."""
    f = np.float32
    x, w = to(np.ones((1, 2, 6, 6), f)), to(np.ones((2, 2, 3, 3), f))
    lo = 0 if name == "padding" else 1
    msg = rf"{name} must be between {lo} and 2147483647; got {shown}"
    with pytest.raises(ValueError, match="conv2d: " + msg):
        cv.conv2d(x, w, **{name: value}, backend=backend)
    v1 = value[1] if isinstance(value, tuple) else value
    with pytest.raises(ValueError, match="conv1d: " + msg):
        cv.conv1d(to(np.ones((1, 2, 6), f)), to(np.ones((2, 2, 3), f)), **{name: v1}, backend=backend)
    if name != "groups":
        with pytest.raises(ValueError, match="im2col: " + msg):
            cv.im2col(x, 3, **{name: value}, backend=backend)
    with pytest.raises(ValueError, match=r"im2col: kernel_size must be between 1 and 2147483647; got 2147483648"):
        cv.im2col(x, (2**31, 1), backend=backend)


def test_zero_size_kernels_rejected(backend, to):
    """Issue 17 item 9: a kernel dimension of 0 is a ValueError naming w (it gave an output before)."""
    f = np.float32
    with pytest.raises(ValueError, match=r"conv1d: w has shape \(3, 2, 0\); expected \(O, C/groups, K\) with K >= 1"):
        cv.conv1d(to(np.ones((1, 2, 8), f)), to(np.ones((3, 2, 0), f)), backend=backend)
    with pytest.raises(ValueError, match=r"conv2d: w has shape \(3, 2, 0, 3\); expected kernel sizes kh, kw >= 1"):
        cv.conv2d(to(np.ones((1, 2, 8, 8), f)), to(np.ones((3, 2, 0, 3), f)), backend=backend)
    with pytest.raises(ValueError, match=r"conv2d: w has shape \(3, 2, 0, 2\); expected kernel sizes"):
        cv.conv2d(to(np.ones((1, 8, 8, 2), f)), to(np.ones((3, 2, 0, 2), f)), layout="NHWC", backend=backend)
    with pytest.raises(ValueError, match=r"conv2d: w has shape \(0, 0, 0, 0\)"):
        cv.conv2d(to(np.ones((1, 0, 8, 8), f)), to(np.ones((0, 0, 0, 0), f)), backend=backend)
    import pygpu_ops as po

    xq = to(np.zeros((1, 2, 11, 11), np.uint8))
    wq = to(np.zeros((3, 2, 0, 0), np.int8))
    with pytest.raises(ValueError, match=r"qconv2d: w has shape \(3, 2, 0, 0\); expected kernel sizes kh, kw >= 1"):
        po.qconv2d(xq, 1.0, 0, wq, 1.0, 0, 1.0, 0, backend=backend)


def test_padded_size_and_gemm_bounds(backend, to):
    """A padded size past 2^31 - 1 (window coordinates the kernels hold in an int) is refused, and
    so are GEMM dimensions within a tile of 2^31 (broadcast views: nothing is allocated)."""
    from test_pooling import address_space_cap

    f = np.float32
    x, w = to(np.ones((1, 1, 4, 4), f)), to(np.ones((1, 1, 2, 2), f))
    with address_space_cap():
        with pytest.raises(ValueError, match=r"conv2d: the padded input \(2147483652, 4\) .* must be at most "
                                             r"2\*\*31 - 1 in each dimension"):
            cv.conv2d(x, w, padding=(2**30, 0), backend=backend)
        with pytest.raises(ValueError, match=r"im2col: the padded input \(4, 4294967298\)"):
            cv.im2col(x, 2, padding=(0, 2**31 - 1), backend=backend)
        with pytest.raises(ValueError, match=r"conv2d: the padded input \(5, 2147483651\)"):
            cv.conv2d(x, w, padding="same", dilation=(1, 2**31 - 1), backend=backend)
        if backend != "numpy" and backend != "cuda":
            C = 2**31 - 200  # C*kh*kw within a GEMM tile of 2^31
            xb = np.broadcast_to(f(1), (1, C, 1, 1))
            wb = np.broadcast_to(f(1), (1, C, 1, 1))
            with pytest.raises(ValueError, match=r"conv2d: C\*kh\*kw, OH\*OW and O must each be at most 2\*\*31 - 257"):
                cv.conv2d(xb, wb, backend=backend)


def test_numpy_and_emulator_cost_follows_the_output():
    """Issue 17 item 4 for convolution: dilation 2^30 padded the input with np.pad (exabytes); now
    each call is well under a second within 1 GiB of address space."""
    from pygpu_ops._runtime import backends
    from test_pooling import run_capped

    names = ["numpy"] + (["emulator"] if backends.problem("emulator") is None else [])
    calls = """
x = np.ones((1, 3, 4, 4), np.float32)
w = np.ones((2, 3, 2, 2), np.float32)
big = dict(stride=2**30, padding=2**30 - 3, dilation=2**30)
CALLS = [
    ("conv2d NCHW", lambda b: po.conv2d(x, w, **big, backend=b)),
    ("conv2d NHWC", lambda b: po.conv2d(x.transpose(0, 2, 3, 1), w.transpose(0, 2, 3, 1), **big, layout="NHWC",
                                        backend=b)),
    ("conv1d", lambda b: po.conv1d(x[:, :, 0], w[:, :, 0], **big, backend=b)),
    ("im2col", lambda b: po.im2col(x, 2, **big, backend=b)),
    ("conv2d dilation 2^29", lambda b: po.conv2d(x, w, padding=2**29, dilation=2**29, stride=2**28, backend=b)),
]
"""
    times = run_capped(calls, names)
    slow = {k: v for k, v in times.items() if v > 1.0}
    assert not slow, f"calls slower than 1 s: {slow}"


# -- emulator-only: shared-memory kernels under two schedules --------------------------------------
@pytest.mark.emulator
def test_shared_memory_kernels_race_free_under_two_schedules():
    from pygpu_ops._runtime import backends

    if backends.problem("emulator"):
        pytest.skip(f"backend 'emulator' unavailable: {backends.problem('emulator')}")
    from pygpu_ops._runtime.emulator.testing import run_under_seeds

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 37, 5)).astype(np.float32)
    w = rng.standard_normal((6, 3, 2, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    run_under_seeds(lambda: cv.nchw_to_nhwc(x, backend="emulator"), seeds=(1, 2))
    run_under_seeds(lambda: cv.conv2d(x, w, b, groups=3, padding=1, activation="relu", backend="emulator"),
                    seeds=(1, 2))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_weights_on_taps_that_only_see_padding_still_multiply_it(backend, to, layout):
    """0 * inf is NaN: a tap that lands in the zero padding for every output contributes
    0 * w, so an infinite or NaN weight there makes its output channel NaN (as in PyTorch and
    the kernels), even though the NumPy fallback leaves such taps out of its matmul."""
    x = np.ones((1, 2, 1, 1), np.float32)
    w = np.ones((3, 2, 1, 3), np.float32)
    w[0, 1, 0, 0] = np.inf    # tap (0, 0): only ever reads the left padding
    w[2, 0, 0, 2] = np.nan    # tap (0, 2): only ever reads the right padding
    want = np.array([np.nan, 2.0, np.nan], np.float32)      # the centre tap: 2 channels of 1 * 1
    xs, ws = (x, w) if layout == "NCHW" else (x.transpose(0, 2, 3, 1).copy(), w.transpose(0, 2, 3, 1).copy())
    y = to.host(cv.conv2d(to(xs), to(ws), padding=(0, 2), dilation=(1, 2), layout=layout, backend=backend))
    y = y.reshape(-1) if layout == "NHWC" else y[0, :, 0, :].reshape(-1)
    np.testing.assert_array_equal(y, want)


def test_layout_transposes_return_new_arrays(backend, to):
    """A new C-contiguous array, also when the permutation moves only size-1 axes."""
    for f, shape in ((cv.nchw_to_nhwc, (1, 1, 1, 1)), (cv.nchw_to_nhwc, (1, 4, 1, 1)), (cv.nhwc_to_nchw, (1, 1, 1, 4)),
                     (cv.nhwc_to_nchw, (2, 1, 1, 1))):
        x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
        xs = to(x)
        y = f(xs, backend=backend)
        assert not np.shares_memory(to.host(y), x) and not (backend == "numpy" and np.shares_memory(y, xs))
        assert to.host(y).flags.c_contiguous


def test_gemm_dimension_bound_is_the_same_on_every_backend(backend, to):
    """O above the conv GEMM's int bound is refused on every backend, an empty batch included
    (the NumPy fallback could compute it, but backends must agree)."""
    x = to(np.zeros((0, 1, 5), np.float32))
    w = np.broadcast_to(np.float32(1), (2**31, 1, 1))
    if backend == "cuda":
        pytest.skip("a 2**31-row weight view cannot be moved to the GPU")
    with pytest.raises(ValueError, match="O must each be at most 2\\*\\*31 - 257"):
        cv.conv1d(x, w, backend=backend)


def test_empty_input_with_padding_gives_the_bias_even_with_infinite_weights(backend, to):
    """H = 0 with padding: outputs exist, every tap reads padding; an empty x gives the bias
    alone on every backend (the device path's rule), not NaN from 0 * inf."""
    x = np.zeros((3, 0, 6, 3), np.float32)                      # NHWC, H = 0
    w = np.full((2, 1, 3, 3), np.inf, np.float32)
    b = np.array([0.25, -0.5], np.float32)
    y = to.host(cv.conv2d(to(x), to(w), to(b), stride=2, padding=1, layout="NHWC", backend=backend))
    assert y.shape == (3, 1, 3, 2)
    np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_im2col_column_bound_is_the_same_on_every_backend(backend, to, layout):
    """C*kh*kw past a C int is refused on every backend before any allocation (the NumPy
    fallback tried to build the 9.7 GB result)."""
    if backend == "cuda":
        pytest.skip("a broadcast view of 2**28 channels stands in for a huge input on the host only")
    C = 2**28
    shape = (1, C, 3, 3) if layout == "NCHW" else (1, 3, 3, C)
    x = np.broadcast_to(np.float32(1), shape)
    with pytest.raises(ValueError, match=r"im2col: C\*kh\*kw = 2415919104 must be at most 2\*\*31 - 1"):
        cv.im2col(x, 3, layout=layout, backend=backend)
