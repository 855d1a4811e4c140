"""``pygpu-ops selftest``: every op on every available backend against a float64 reference.

Each case builds its inputs with a fixed seed, runs the op and compares with an independent
NumPy float64 computation; a mismatch is reported and makes the command exit non-zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np

from . import linalg as _linalg


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


CASES: List[Case] = [_gemm_case(v, np.float32, 67, 45, 33) for v in _linalg.sgemm_variants()]
CASES.append(_gemm_case("auto", np.float64, 67, 45, 33))


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
