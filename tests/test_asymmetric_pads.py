"""Asymmetric padding, ((top, bottom), (left, right)), in conv2d / conv1d / max_pool2d / avg_pool2d
on every backend and both layouts, against direct-loop float64 references written from the ONNX
Runtime semantics (checked against ONNX Runtime itself in tests/ir/test_asymmetric_pads.py):
windows start at o * s - begin; output size floor/ceil((L + begin + end - d(k-1) - 1) / s) + 1,
a ceil_mode window that would start past L + begin dropped; the count_include_pad divisor is the
window clipped to L + end."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close_bound
from pygpu_ops.conv import conv1d, conv2d
from pygpu_ops.pooling import avg_pool2d, max_pool2d
from test_conv import ref_conv2d_nchw

LAYOUTS = ("NCHW", "NHWC")


def out_size(L, k, s, b, e, d=1, ceil_mode=False):
    span = L + b + e - d * (k - 1) - 1
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= L + b:
        o -= 1
    return o


def ref_pool(x, k, s, pads, d, ceil_mode, kind, count_include_pad=False):
    """x NCHW float64; pads ((t, b), (l, r)). Max: -inf padding; avg: the divisor described above."""
    N, C, H, W = x.shape
    (t, b), (l, r) = pads
    OH = out_size(H, k[0], s[0], t, b, d[0], ceil_mode)
    OW = out_size(W, k[1], s[1], l, r, d[1], ceil_mode)
    y = np.zeros((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * s[0] - t, ow * s[1] - l
            if kind == "max":
                best = np.full((N, C), -np.inf)
                for i in range(k[0]):
                    for j in range(k[1]):
                        h, w = h0 + i * d[0], w0 + j * d[1]
                        if 0 <= h < H and 0 <= w < W:
                            best = np.maximum(best, x[:, :, h, w])
                y[:, :, oh, ow] = best
            else:
                h1, w1 = min(h0 + k[0], H + b), min(w0 + k[1], W + r)
                hs, he, ws, we = max(h0, 0), min(h1, H), max(w0, 0), min(w1, W)
                div = (h1 - h0) * (w1 - w0) if count_include_pad else (he - hs) * (we - ws)
                y[:, :, oh, ow] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / div if div > 0 else 0.0
    return y


def ref_conv(x, w, pads, s, d, groups):
    """tests/test_conv.py's direct-loop float64 convolution of x zero-padded here by pads."""
    (t, b), (l, r) = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    return ref_conv2d_nchw(xp, w, None, s, 0, d, groups, relu=False)[0]


def to_layout(a, layout):
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


POOL_CASES = [
    # (H, W), k, s, pads ((t, b), (l, r)), ceil_mode
    ((5, 6), (3, 3), (2, 2), ((0, 1), (0, 1)), False),     # SAME_UPPER stride 2, as TF exports it
    ((5, 6), (3, 3), (2, 2), ((1, 0), (1, 0)), True),      # SAME_LOWER, ceil_mode
    ((7, 4), (4, 3), (3, 2), ((1, 2), (0, 1)), True),      # begin != end on both axes
    ((1, 1), (2, 2), (1, 1), ((0, 1), (1, 0)), False),     # 1x1 input
    ((11, 13), (3, 2), (3, 3), ((2, 0), (0, 1)), True),    # primes, a last window past the padded input
    ((4, 9), (5, 5), (1, 4), ((4, 3), (2, 4)), False),     # pads up to the kernel's size - 1
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("hw,k,s,pads,ceil_mode", POOL_CASES)
def test_pools(backend, to, layout, hw, k, s, pads, ceil_mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3) + hw).astype(np.float32)
    xl = to(to_layout(x, layout))
    got = to.host(max_pool2d(xl, k, s, pads, 1, ceil_mode, layout=layout, backend=backend))
    want = to_layout(ref_pool(x.astype(np.float64), k, s, pads, (1, 1), ceil_mode, "max"), layout)
    assert_close_bound(got, want, 0.0, f"max_pool2d {layout}")
    for cip in (False, True):
        got = to.host(avg_pool2d(xl, k, s, pads, ceil_mode, cip, layout=layout, backend=backend))
        want = to_layout(ref_pool(x.astype(np.float64), k, s, pads, (1, 1), ceil_mode, "avg", cip), layout)
        assert_close_bound(got, want, 4e-7 * k[0] * k[1] * np.abs(x).max(), f"avg_pool2d {layout} cip={cip}")


def test_max_pool_dilated_asymmetric(backend, to):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 7, 8)).astype(np.float32)
    pads = ((3, 1), (0, 2))
    got = to.host(max_pool2d(to(x), 2, 2, pads, (3, 2), True, backend=backend))
    want = ref_pool(x.astype(np.float64), (2, 2), (2, 2), pads, (3, 2), True, "max")
    assert_close_bound(got, want, 0.0, "dilated")


CONV_CASES = [
    # x shape (N, C, H, W), w shape, stride, pads, dilation, groups
    ((2, 3, 5, 6), (4, 3, 3, 3), (2, 2), ((0, 1), (0, 1)), (1, 1), 1),
    ((1, 4, 7, 5), (4, 1, 3, 3), (2, 1), ((1, 2), (0, 1)), (1, 1), 4),      # depthwise
    ((1, 2, 1, 1), (3, 2, 2, 2), (1, 1), ((1, 0), (0, 1)), (1, 1), 1),      # 1x1 input
    ((2, 6, 9, 11), (4, 3, 2, 3), (3, 2), ((2, 0), (3, 1)), (2, 1), 2),     # dilation, groups
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("xs,ws,s,pads,d,groups", CONV_CASES)
def test_conv2d(backend, to, layout, xs, ws, s, pads, d, groups):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    want = ref_conv(x.astype(np.float64), w.astype(np.float64), pads, s, d, groups)
    wl = w if layout == "NCHW" else np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    got = to.host(conv2d(to(to_layout(x, layout)), to(wl), stride=s, padding=pads, dilation=d, groups=groups,
                         layout=layout, backend=backend))
    bound = 1e-6 * (ws[1] * ws[2] * ws[3]) * np.abs(x).max() * np.abs(w).max()
    assert_close_bound(got, to_layout(want, layout), bound, f"conv2d {layout}")


def test_conv2d_mixed_forms_and_conv1d(backend, to):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 2)).astype(np.float32)
    want = ref_conv(x.astype(np.float64), w.astype(np.float64), ((1, 1), (0, 1)), (2, 2), (1, 1), 1)
    got = to.host(conv2d(to(x), to(w), stride=2, padding=(1, (0, 1)), backend=backend))   # an axis as one int
    assert_close_bound(got, want, 1e-5 * 18 * np.abs(x).max() * np.abs(w).max(), "mixed")
    x1 = rng.standard_normal((2, 3, 10)).astype(np.float32)
    w1 = rng.standard_normal((4, 3, 3)).astype(np.float32)
    want = ref_conv(x1[:, :, None].astype(np.float64), w1[:, :, None].astype(np.float64), ((0, 0), (2, 0)),
                    (1, 3), (1, 1), 1)[:, :, 0]
    got = to.host(conv1d(to(x1), to(w1), stride=3, padding=(2, 0), backend=backend))
    assert_close_bound(got, want, 1e-5 * 9 * np.abs(x1).max() * np.abs(w1).max(), "conv1d (left, right)")


def test_errors():
    x = np.ones((1, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"each padding \(begin, end\) must be smaller than the effective kernel size"):
        max_pool2d(x, 3, 1, ((0, 3), (0, 0)), backend="numpy")
    with pytest.raises(ValueError, match=r"padding entries must be an int or a \(begin, end\) pair"):
        avg_pool2d(x, 3, 1, ((0, 1, 2), (0, 0)), backend="numpy")
    with pytest.raises(ValueError, match="padding must be between 0 and 2147483647; got -1"):
        avg_pool2d(x, 3, 1, ((0, -1), 0), backend="numpy")
    with pytest.raises(TypeError, match=r"conv2d: padding entries must be an int or a \(begin, end\) pair"):
        conv2d(x, np.ones((1, 2, 3, 3), np.float32), padding=((0, 1, 2), 0), backend="numpy")
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d(x, np.ones((1, 2, 9, 3), np.float32), padding=((1, 1), 0), backend="numpy")
    with pytest.raises(TypeError, match=r"conv1d: padding"):
        conv1d(x[:, :, 0], np.ones((1, 2, 3), np.float32), padding=(1, 2, 3), backend="numpy")
