"""``pygpu-ops selftest``: every op on every available backend against a float64 reference.

Each case builds its inputs with a fixed seed, runs the op and compares with an independent
NumPy float64 computation; a mismatch is reported and makes the command exit non-zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np

from . import linalg as _linalg
from . import quantization as _quant


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[str], Tuple[np.ndarray, np.ndarray, float]]  # backend -> (got, want, tol)


def _to_backend(backend: str, *xs):
    if backend != "cuda":
        return xs
    import cupy

    return tuple(cupy.asarray(x) for x in xs)


def _host(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _gemm_case(variant: str, dtype, M: int, N: int, K: int):
    def run(backend):
        rng = np.random.default_rng(M * 10007 + N * 101 + K)
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
        c = rng.standard_normal((M, N)).astype(dtype)
        da, db, dc = _to_backend(backend, a, b, c)
        got = _host(_linalg.gemm(da, db, dc, alpha=1.5, beta=-0.5, variant=variant, backend=backend))
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
        got = _host(_quant.int8_gemm(da, db, a_zero_point=za, b_zero_point=dzb, variant=variant, backend=backend))
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
        got = _host(_quant.dequantize(q, dscale, dzp, axis=1, backend=backend))
        info = np.iinfo(qdtype)
        s64, z64 = scale.astype(np.float64)[None, :, None], zp.astype(np.float64)[None, :, None]
        qref = np.clip(np.rint(x.astype(np.float64) / s64) + z64, info.min, info.max)
        want = (qref - z64) * s64
        return got, want, 1e-6 * np.abs(want) + 1e-12

    return Case(f"quantize+dequantize[{qdtype}:axis=1:4x5x6]", run)


CASES: List[Case] = [_gemm_case(v, np.float32, 67, 45, 33) for v in _linalg.sgemm_variants()]
CASES.append(_gemm_case("auto", np.float64, 67, 45, 33))
CASES += [_int8_gemm_case(v, ad, bd, 33, 70, 45) for v in _quant.int8_gemm_variants()
          for ad, bd in ((np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8), (np.uint8, np.uint8))]
CASES += [_quantize_case(q) for q in ("int8", "uint8")]


def run(backends, verbose: bool = True) -> int:
    failures = 0
    for backend in backends:
        for case in CASES:
            try:
                got, want, tol = case.run(backend)
                bad = ~(np.abs(got.astype(np.float64) - want) <= tol)
                ok = got.shape == want.shape and not bad.any()
                detail = "" if ok else f"{int(bad.sum())} of {bad.size} elements off"
            except Exception as exc:  # a crash is a failure too, reported, not raised
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            failures += not ok
            if verbose or not ok:
                print(f"{'PASS' if ok else 'FAIL'}  {backend:8s} {case.name} {detail}")
    print(f"selftest: {failures} failed" if failures else "selftest: all passed")
    return 1 if failures else 0
