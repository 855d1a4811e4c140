"""``pygpu-ops selftest``: every op on every available backend against a float64 reference.

Each case builds its inputs with a fixed seed, runs the op and compares with an independent
NumPy float64 computation; a mismatch is reported and makes the command exit non-zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np

from . import activations as _act
from . import conv as _conv
from . import elementwise as _ew
from . import linalg as _linalg
from . import normalization as _norm
from . import pooling as _pool
from . import quantization as _quant
from ._runtime.device import to_host


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[str], Tuple[np.ndarray, np.ndarray, float]]  # backend -> (got, want, tol)


def _to_backend(backend: str, *xs):
    if backend != "cuda":
        return xs
    import cupy

    return tuple(cupy.asarray(x) for x in xs)


def _gemm_case(variant: str, dtype, M: int, N: int, K: int):
    def run(backend):
        rng = np.random.default_rng(M * 10007 + N * 101 + K)
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
        c = rng.standard_normal((M, N)).astype(dtype)
        da, db, dc = _to_backend(backend, a, b, c)
        got = to_host(_linalg.gemm(da, db, dc, alpha=1.5, beta=-0.5, variant=variant, backend=backend))
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = 1.5 * a64 @ b64 - 0.5 * c.astype(np.float64)
        eps = np.finfo(dtype).eps
        tol = 2 * K * eps * (1.5 * np.abs(a64) @ np.abs(b64) + 0.5 * np.abs(c))
        return got, want, tol

    return Case(f"gemm[{np.dtype(dtype).name}:{variant}:{M}x{N}x{K}]", run)


def _int8_gemm_case(variant: str, adt, bdt, M: int, N: int, K: int):
    def run(backend):
        rng = np.random.default_rng(M + N + K)
        info_a, info_b = np.iinfo(adt), np.iinfo(bdt)
        a = rng.integers(info_a.min, info_a.max + 1, (M, K), dtype=adt)
        b = rng.integers(info_b.min, info_b.max + 1, (K, N), dtype=bdt)
        za = int(rng.integers(info_a.min, info_a.max + 1))
        zb = rng.integers(info_b.min, info_b.max + 1, N, dtype=bdt)
        da, db, dzb = _to_backend(backend, a, b, zb)
        got = to_host(_quant.int8_gemm(da, db, a_zero_point=za, b_zero_point=dzb, variant=variant, backend=backend))
        want = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb.astype(np.int64))
        return got, want, 0.0

    return Case(f"int8_gemm[{np.dtype(adt).name}x{np.dtype(bdt).name}:{variant}:{M}x{N}x{K}]", run)


def _quantize_case(qdtype: str):
    def run(backend):
        rng = np.random.default_rng(3)
        x = (rng.standard_normal((4, 5, 6)) * 3).astype(np.float32)
        scale = np.array([0.02, 0.05, 0.1, 0.25, 0.5], np.float32)
        zp = np.array([0, 3, 7, 1, 2] if qdtype == "int8" else [128, 3, 250, 1, 2], dtype=qdtype)
        dx, dscale, dzp = _to_backend(backend, x, scale, zp)
        q = _quant.quantize(dx, dscale, dzp, axis=1, dtype=qdtype, backend=backend)
        got = to_host(_quant.dequantize(q, dscale, dzp, axis=1, backend=backend))
        info = np.iinfo(qdtype)
        s64, z64 = scale.astype(np.float64)[None, :, None], zp.astype(np.float64)[None, :, None]
        qref = np.clip(np.rint(x.astype(np.float64) / s64) + z64, info.min, info.max)
        want = (qref - z64) * s64
        return got, want, 1e-6 * np.abs(want) + 1e-12

    return Case(f"quantize+dequantize[{qdtype}:axis=1:4x5x6]", run)


def _softmax_case(fn_name: str, variant: str, dtype, shape, axis: int = -1):
    def run(backend):
        rng = np.random.default_rng(shape[-1])
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        x.reshape(-1)[:: 7] += 20.0  # outliers, so the probabilities are not all tiny
        (dx,) = _to_backend(backend, x)
        fn = getattr(_norm, fn_name)
        got = to_host(fn(dx, axis=axis, variant=variant, backend=backend))
        x64 = x.astype(np.float64)
        z = x64 - x64.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
        want = z - lse if fn_name == "log_softmax" else np.exp(z - lse)
        L = shape[axis]
        return got, want, 4 * L * np.finfo(dtype).eps * (np.abs(want) + (1 if fn_name == "log_softmax" else 0))

    return Case(f"{fn_name}[{np.dtype(dtype).name}:{variant}:{'x'.join(map(str, shape))}:axis={axis}]", run)


def _pool_ref(x, k, s, p, ceil_mode, kind, count_include_pad=True):
    """Direct float64 loops over NCHW windows (PyTorch semantics)."""
    N, C, H, W = x.shape

    def out_size(n):
        o = (n + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= n + p:
            o -= 1
        return o

    OH, OW = out_size(H), out_size(W)
    y = np.empty((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * s - p, j * s - p
            h1, w1 = min(h0 + k, H + p), min(w0 + k, W + p)
            win = x[:, :, max(h0, 0):min(h1, H), max(w0, 0):min(w1, W)].astype(np.float64)
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                div = (h1 - h0) * (w1 - w0) if count_include_pad else win.shape[2] * win.shape[3]
                y[:, :, i, j] = win.sum(axis=(2, 3)) / div
    return y


def _pool_case(kind: str, layout: str, count_include_pad: bool = True):
    def run(backend):
        rng = np.random.default_rng(5)
        x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
        xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        (dx,) = _to_backend(backend, xin)
        if kind == "max":
            got = _pool.max_pool2d(dx, 3, stride=2, padding=1, ceil_mode=True, layout=layout, backend=backend)
        else:
            got = _pool.avg_pool2d(dx, 3, stride=2, padding=1, ceil_mode=True,
                                   count_include_pad=count_include_pad, layout=layout, backend=backend)
        got = to_host(got)
        if layout == "NHWC":
            got = got.transpose(0, 3, 1, 2)
        want = _pool_ref(x, 3, 2, 1, True, kind, count_include_pad)
        return got, want, 1e-5 * (1 + np.abs(want))

    return Case(f"{kind}_pool2d[{layout}:k3s2p1:ceil:count_include_pad={count_include_pad}:2x3x9x11]", run)


def _conv_ref(x, w, bias, stride, pad, groups, relu):
    """Direct float64 loops: NCHW x, w (O, C/g, kh, kw), symmetric integer padding."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + W] = x
    OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    y = np.zeros((N, O, OH, OW))
    og = O // groups
    for o in range(O):
        g = o // og
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * Cg:(g + 1) * Cg, i:i + stride * OH:stride, j:j + stride * OW:stride]
                y[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j].astype(np.float64))
        if bias is not None:
            y[:, o] += bias[o]
    return np.maximum(y, 0) if relu else y


def _conv_case(layout: str):
    def run(backend):
        rng = np.random.default_rng(21)
        x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
        w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
        bias = rng.standard_normal(6).astype(np.float32)
        want = _conv_ref(x, w, bias, 2, 1, 2, True)
        if layout == "NHWC":
            x, w = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        dx, dw, db = _to_backend(backend, x, w, bias)
        got = to_host(_conv.conv2d(dx, dw, db, stride=2, padding=1, groups=2, layout=layout,
                                 activation="relu", backend=backend))
        if layout == "NHWC":
            got = got.transpose(0, 3, 1, 2)
        mag = _conv_ref(np.abs(x if layout == "NCHW" else x.transpose(0, 3, 1, 2)),
                        np.abs(w if layout == "NCHW" else w.transpose(0, 3, 1, 2)), np.abs(bias), 2, 1, 2, False)
        return got, want, 2 * 20 * np.finfo(np.float32).eps * mag

    return Case(f"conv2d[{layout}:stride2:pad1:groups2:bias:relu:2x4x7x6]", run)


def _relu_case(slope):
    def run(backend):
        rng = np.random.default_rng(2)
        x = rng.standard_normal(1021).astype(np.float32)
        x[::17] = np.nan
        (dx,) = _to_backend(backend, x)
        got = to_host(_act.relu(dx, backend=backend) if slope is None else
                    _act.leaky_relu(dx, slope, backend=backend))
        x64 = x.astype(np.float64)
        want = np.where(np.isnan(x64), np.nan, np.where(x64 > 0, x64, 0.0 if slope is None else slope * x64))
        return got, want, 1e-7 * np.abs(want)

    return Case("relu[1021:nan]" if slope is None else f"leaky_relu[{slope}:1021:nan]", run)


def _transpose_case():
    def run(backend):
        x = np.arange(2 * 33 * 9 * 7, dtype=np.float32).reshape(2, 33, 9, 7)
        (dx,) = _to_backend(backend, x)
        there = _conv.nchw_to_nhwc(dx, backend=backend)
        back = to_host(_conv.nhwc_to_nchw(there, backend=backend))
        got = np.concatenate([to_host(there).ravel(), back.ravel()])
        want = np.concatenate([x.transpose(0, 2, 3, 1).ravel(), x.ravel()]).astype(np.float64)
        return got, want, 0.0

    return Case("nchw_to_nhwc+nhwc_to_nchw[2x33x9x7]", run)


def _qconv_case(layout: str):
    """QLinearConv against int64 loops and float64 requantization (one unit allowed next to ties)."""
    def run(backend):
        rng = np.random.default_rng(8)
        x = rng.integers(0, 256, (2, 3, 7, 9), dtype=np.uint8)
        w = rng.integers(-127, 128, (6, 1, 3, 3), dtype=np.int8)
        bias = rng.integers(-500, 500, 6).astype(np.int32)
        xs, xz, ys, yz = 0.02, 140, 0.05, 10
        ws = rng.uniform(0.005, 0.02, 6).astype(np.float32)
        acc = _conv_ref(x.astype(np.float64) - xz, w.astype(np.float64), bias.astype(np.float64), 2, 1, 3, False)
        mult = (np.float32(xs) * ws).astype(np.float64) / np.float32(ys)
        want = np.clip(np.rint(acc * mult[None, :, None, None]) + yz, 0, 255)
        xin, win = x, w
        if layout == "NHWC":
            xin, win = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        dx, dw, db, dws = _to_backend(backend, xin, win, bias, ws)
        got = to_host(_quant.qconv2d(dx, xs, xz, dw, dws, 0, ys, yz, db, stride=2, padding=1, groups=3,
                                   layout=layout, backend=backend))
        if layout == "NHWC":
            got = got.transpose(0, 3, 1, 2)
        return got, want, 1.0

    return Case(f"qconv2d[uint8:{layout}:stride2:pad1:groups3:per-channel:2x3x7x9]", run)


def _binary_case(op: str):
    """(3, 1, 5) op (1, 4, 1) broadcast; float64 arithmetic rounded once to float32 is the exact result."""
    def run(backend):
        rng = np.random.default_rng(31)
        a = rng.standard_normal((3, 1, 5)).astype(np.float32)
        b = rng.standard_normal((1, 4, 1)).astype(np.float32)
        da, db = _to_backend(backend, a, b)
        got = to_host(getattr(_ew, op)(da, db, backend=backend))
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = {"add": a64 + b64, "sub": a64 - b64, "mul": a64 * b64, "div": a64 / b64}[op]
        return got, want.astype(np.float32).astype(np.float64), 0.0

    return Case(f"{op}[float32:3x1x5+1x4x1]", run)


def _unary_case(op: str):
    """sigmoid / tanh within their documented bounds (4 and 2 eps relative), clip exact."""
    def run(backend):
        x = (np.random.default_rng(32).standard_normal(1021) * 8).astype(np.float32)
        x[::97] = np.nan
        (dx,) = _to_backend(backend, x)
        x64 = x.astype(np.float64)
        if op == "clip":
            return to_host(_ew.clip(dx, -1.5, 2.0, backend=backend)), np.clip(x64, -1.5, 2.0), 0.0
        got = to_host(getattr(_ew, op)(dx, backend=backend))
        want = 1 / (1 + np.exp(-x64)) if op == "sigmoid" else np.tanh(x64)
        eps = np.finfo(np.float32).eps
        return got, want, (4 if op == "sigmoid" else 2) * eps * np.abs(want) + np.finfo(np.float32).tiny

    return Case(f"{op}[float32:1021:nan]", run)


def _batch_norm_case(layout: str):
    def run(backend):
        rng = np.random.default_rng(33)
        x = rng.standard_normal((2, 5, 3, 7)).astype(np.float32)
        scale, bias, mean = (rng.standard_normal(5).astype(np.float32) for _ in range(3))
        var = rng.uniform(0.1, 2.0, 5).astype(np.float32)
        xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        args = _to_backend(backend, xin, scale, bias, mean, var)
        got = to_host(_ew.batch_norm(*args, epsilon=1e-3, layout=layout, backend=backend))
        if layout == "NHWC":
            got = got.transpose(0, 3, 1, 2)
        c = (slice(None), None, None)
        a = scale.astype(np.float64)[c] / np.sqrt(var.astype(np.float64)[c] + 1e-3)
        want = (x - mean.astype(np.float64)[c]) * a + bias.astype(np.float64)[c]
        eps = np.finfo(np.float32).eps
        return got, want, eps * (np.abs(a * x) + np.abs(mean[c] * a) + np.abs(bias[c]) + np.abs(want))

    return Case(f"batch_norm[float32:{layout}:2x5x3x7]", run)


def _copy_case(op: str):
    def run(backend):
        x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
        y = -np.arange(2 * 2 * 4 * 5, dtype=np.float32).reshape(2, 2, 4, 5)
        dx, dy = _to_backend(backend, x, y)
        if op == "transpose":
            return to_host(_ew.transpose(dx, (3, 1, 0, 2), backend=backend)), x.transpose(3, 1, 0, 2).astype(np.float64), 0.0
        return to_host(_ew.concat([dx, dy, dx], 1, backend=backend)), np.concatenate([x, y, x], 1).astype(np.float64), 0.0

    return Case("transpose[float32:2x3x4x5:(3,1,0,2)]" if op == "transpose" else "concat[float32:axis=1:3+2+3]", run)


CASES: List[Case] = [_gemm_case(v, np.float32, 67, 45, 33) for v in _linalg.sgemm_variants()]
CASES.append(_gemm_case("auto", np.float64, 67, 45, 33))
CASES += [_int8_gemm_case(v, ad, bd, 33, 70, 45) for v in _quant.int8_gemm_variants()
          for ad, bd in ((np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8), (np.uint8, np.uint8))]
CASES += [_quantize_case(q) for q in ("int8", "uint8")]
CASES += [_qconv_case(lay) for lay in ("NCHW", "NHWC")]
CASES += [_softmax_case(f, v, np.float32, shape) for f in ("softmax", "log_softmax")
          for v in _norm.softmax_variants() for shape in ((5, 33), (3, 1500))]
CASES.append(_softmax_case("softmax", "auto", np.float64, (4, 37, 5), axis=1))
CASES += [_conv_case(lay) for lay in ("NCHW", "NHWC")]
CASES += [_relu_case(None), _relu_case(0.2), _transpose_case()]
CASES += [_pool_case("max", lay) for lay in ("NCHW", "NHWC")]
CASES += [_pool_case("avg", lay, cip) for lay in ("NCHW", "NHWC") for cip in (True, False)]
CASES += [_binary_case(op) for op in ("add", "sub", "mul", "div")]
CASES += [_unary_case(op) for op in ("sigmoid", "tanh", "clip")]
CASES += [_batch_norm_case(lay) for lay in ("NCHW", "NHWC")] + [_copy_case("transpose"), _copy_case("concat")]


def run(backends, verbose: bool = True) -> int:
    failures = 0
    for backend in backends:
        for case in CASES:
            try:
                got, want, tol = case.run(backend)
                g64 = got.astype(np.float64)
                both_nan = np.isnan(g64) & np.isnan(want)
                bad = ~((g64 == want) | both_nan | (np.abs(g64 - want) <= tol))
                ok = got.shape == want.shape and not bad.any()
                detail = "" if ok else f"{int(bad.sum())} of {bad.size} elements off"
            except Exception as exc:  # a crash is a failure too, reported, not raised
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            failures += not ok
            if verbose or not ok:
                print(f"{'PASS' if ok else 'FAIL'}  {backend:8s} {case.name} {detail}")
    print(f"selftest: {failures} failed" if failures else "selftest: all passed")
    return 1 if failures else 0
