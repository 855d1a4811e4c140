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
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
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
