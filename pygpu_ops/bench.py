"""``pygpu-ops bench``: GEMM throughput of each SGEMM ladder step and DGEMM against the vendor library.

On a GPU: CUDA events, warm-up, the median (and min/max) of ``--repeats`` timed launches, inputs
random (never all-zero), every timed result checked against cuBLAS (``cupy.matmul`` with TF32
disabled before the first GEMM), GFLOP/s and % of cuBLAS. Without a GPU the first line says so
and the NumPy fallback is timed against plain NumPy/BLAS; emulator timings are never reported.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

from . import linalg as _linalg
from ._runtime import backends

GPU_SIZES = (1024, 2048, 4096, 8192)
CPU_SIZES = (256, 512, 1024)


def add_arguments(p) -> None:
    p.add_argument("--sizes", type=int, nargs="+", help="square GEMM sizes (M = N = K)")
    p.add_argument("--variants", nargs="+", help="SGEMM ladder steps to time (default: all)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per case")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--json", metavar="FILE", help="write the raw results as JSON to FILE ('-' for stdout)")


def _stats(times_ms):
    return {"median_ms": statistics.median(times_ms), "min_ms": min(times_ms), "max_ms": max(times_ms),
            "repeats": len(times_ms)}


def _gpu_rows(args):
    os.environ.setdefault("CUPY_TF32", "0")
    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
    import cupy

    sizes = args.sizes or ((1024, 2048) if args.quick else GPU_SIZES)
    repeats = args.repeats or (5 if args.quick else 20)
    variants = args.variants or list(_linalg.sgemm_variants())

    def time_fn(fn, n):
        fn()
        cupy.cuda.Device().synchronize()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        out = []
        for _ in range(n):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            out.append(cupy.cuda.get_elapsed_time(start, stop))
        return out

    rows = []
    rng = cupy.random.default_rng(0)
    for dtype, names in ((np.float32, variants), (np.float64, ["auto"])):
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=dtype)
            b = rng.standard_normal((n, n), dtype=dtype)
            ref = cupy.matmul(a, b)
            flops = 2.0 * n ** 3
            slow = dtype == np.float32 and n > 4096
            base = _stats(time_fn(lambda: cupy.matmul(a, b), repeats))
            lib = "cuBLAS SGEMM" if dtype == np.float32 else "cuBLAS DGEMM"
            rows.append(dict(op="gemm", dtype=np.dtype(dtype).name, variant=lib, size=n,
                             gflops=flops / base["median_ms"] / 1e6, pct_vendor=100.0, **base))
            for v in names:
                if slow and v in ("naive", "coalesced"):
                    reps = 2  # seconds per launch at 8192: a couple of repeats say enough
                else:
                    reps = repeats
                c = _linalg.gemm(a, b, variant=v)
                err = float(cupy.max(cupy.abs(c - ref)) / cupy.max(cupy.abs(ref)))
                tol = 1e-4 if dtype == np.float32 else 1e-12
                st = _stats(time_fn(lambda: _linalg.gemm(a, b, variant=v, out=c), reps))
                label = v if dtype == np.float32 else _linalg.DGEMM.kernel.symbol
                rows.append(dict(op="gemm", dtype=np.dtype(dtype).name, variant=label, size=n,
                                 gflops=flops / st["median_ms"] / 1e6,
                                 pct_vendor=100.0 * base["median_ms"] / st["median_ms"],
                                 max_rel_err=err, correct=err <= tol, **st))
                if not err <= tol:
                    print(f"WRONG RESULT: {label} at {n}: max relative error {err:.3g}", file=sys.stderr)
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    meta = {"device": props["name"].decode(), "cc": f"{props['major']}.{props['minor']}",
            "cupy": cupy.__version__, "backend": "cuda"}
    return meta, rows


def _cpu_rows(args):
    sizes = args.sizes or ((128, 256) if args.quick else CPU_SIZES)
    repeats = args.repeats or (3 if args.quick else 7)
    rows = []
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in sizes:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            flops = 2.0 * n ** 3
            for label, fn in (("numpy.matmul", lambda: np.matmul(a, b)),
                              ("pygpu_ops numpy backend", lambda: _linalg.gemm(a, b, backend="numpy"))):
                fn()
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    ts.append((time.perf_counter() - t0) * 1e3)
                st = _stats(ts)
                rows.append(dict(op="gemm", dtype=np.dtype(dtype).name, variant=label, size=n,
                                 gflops=flops / st["median_ms"] / 1e6, **st))
    return {"backend": "numpy", "device": "CPU"}, rows


def format_rows(rows) -> str:
    head = ("op", "dtype", "variant", "size", "median ms", "GFLOP/s", "% vendor")
    lines = [head]
    for r in rows:
        pct = f"{r['pct_vendor']:.1f}" if "pct_vendor" in r else "-"
        lines.append((r["op"], r["dtype"], r["variant"], str(r["size"]), f"{r['median_ms']:.3f}",
                      f"{r['gflops']:.1f}", pct))
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(l)) for l in lines)


def main(args) -> int:
    gpu = backends.problem("cuda") is None
    if gpu:
        print("pygpu-ops bench: timing the CUDA kernels (TF32 off for the cuBLAS baseline)")
        meta, rows = _gpu_rows(args)
    else:
        print(f"pygpu-ops bench: no GPU here ({backends.problem('cuda')}); timing the NumPy "
              f"fallback against plain NumPy/BLAS. Emulator runs are never timed.")
        meta, rows = _cpu_rows(args)
    print(format_rows(rows))
    if args.json:
        doc = json.dumps({"meta": meta, "results": rows}, indent=1)
        if args.json == "-":
            print(doc)
        else:
            with open(args.json, "w") as f:
                f.write(doc + "\n")
    return 0 if all(r.get("correct", True) for r in rows) else 1
