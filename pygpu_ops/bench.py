"""``pygpu-ops bench``, the main job: each kernel variant against the vendor library, in the
roofline unit (TFLOP/s for GEMM, GB/s for memory-bound ops), with the ratio to the baseline.

Method on a GPU: CUDA events around each launch, a warm-up call, the median (with min and max) of
``--repeats`` timed calls, the L2 cache flushed before each one (a write over twice its size) so
the cache is not what is timed, random inputs (never all-zero), every timed result checked
against a float64 reference with an error bound, and TF32 disabled for the cuBLAS baseline before
the first GEMM. Without a GPU the first line says so and the NumPy fallback is timed against plain
NumPy/BLAS; emulator runs are never timed.

Cases come from a registry of providers, one per op family (``PROVIDERS``); adding an op to the
benchmark is one provider function.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import __version__
from . import linalg as _linalg
from ._runtime import backends

GPU_SIZES = (1024, 2048, 4096, 8192)
GPU_QUICK_SIZES = (1024, 2048)
CPU_SIZES = (256, 512, 1024)
CPU_QUICK_SIZES = (128, 256)


@dataclass
class Case:
    """One timed call. Rows with the same ``group`` share the baseline (the ``vendor`` row)."""

    op: str
    dtype: str
    variant: str
    size: str
    unit: str                     # "TFLOP/s" or "GB/s"
    work: float                   # FLOPs or bytes per call
    fn: Callable[[], object]
    check: Optional[Callable[[], Tuple[bool, float]]] = None   # -> (ok, max error / bound)
    vendor: bool = False
    repeats: Optional[int] = None  # overrides --repeats (e.g. for a naive kernel at 8192)
    group: str = ""


@dataclass
class Env:
    """What a provider needs: the array module, sizes, variants, and whether this is a GPU run."""

    xp: object
    gpu: bool
    sizes: Tuple[int, ...]
    variants: Optional[List[str]]
    quick: bool
    extra: Dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------------
def gemm_cases(env: Env) -> Iterable[Case]:
    xp = env.xp
    variants = env.variants or list(_linalg.sgemm_variants())
    unknown = sorted(set(variants) - set(_linalg.sgemm_variants()))
    if unknown:
        raise ValueError(f"bench: unknown SGEMM variants {unknown}; known: {list(_linalg.sgemm_variants())}")
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        for n in env.sizes:
            rng = np.random.default_rng(n)
            a = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
            b = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
            c = xp.empty((n, n), dtype=dtype)
            group = f"gemm/{name}/{n}"
            flops = 2.0 * n ** 3
            check = _gemm_checker(xp, a, b, c, dtype)
            if env.gpu:
                lib = "cuBLAS SGEMM" if dtype == np.float32 else "cuBLAS DGEMM"
                yield Case("gemm", name, lib, str(n), "TFLOP/s", flops, lambda a=a, b=b, c=c: xp.matmul(a, b, out=c),
                           vendor=True, group=group)
                rows = [(v, v) for v in variants] if dtype == np.float32 else [("auto", _linalg.DGEMM.label)]
                for variant, label in rows:
                    slow = variant in ("naive", "coalesced") and n > 4096
                    yield Case("gemm", name, label, str(n), "TFLOP/s", flops,
                               lambda a=a, b=b, c=c, v=variant: _linalg.gemm(a, b, variant=v, out=c),
                               check=check, repeats=2 if slow else None, group=group)
            else:
                yield Case("gemm", name, "numpy.matmul", str(n), "TFLOP/s", flops,
                           lambda a=a, b=b, c=c: np.matmul(a, b, out=c), vendor=True, group=group)
                yield Case("gemm", name, "numpy backend", str(n), "TFLOP/s", flops,
                           lambda a=a, b=b, c=c: _linalg.gemm(a, b, out=c, backend="numpy"),
                           check=check, group=group)


def _gemm_checker(xp, a, b, c, dtype):
    """c (just computed) against float64, within 2 K eps (|a| @ |b|) elementwise; NaN fails."""
    def check():
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ref = xp.matmul(a64, b64)
        bound = 2 * a.shape[1] * np.finfo(dtype).eps * xp.matmul(xp.abs(a64), xp.abs(b64))
        ratio = float(xp.max(xp.abs(c.astype(np.float64) - ref) / bound))
        return ratio <= 1.0, ratio  # NaN compares false: a NaN anywhere fails

    return check


PROVIDERS: Dict[str, Callable[[Env], Iterable[Case]]] = {"gemm": gemm_cases}


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
class CpuTimer:
    def __call__(self, fn, repeats: int) -> List[float]:
        fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out


class GpuTimer:
    """CUDA events around each call; the L2 cache is overwritten before each timed call."""

    def __init__(self, cupy):
        self.cupy = cupy
        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device().id
        try:
            l2 = rt.deviceGetAttribute(rt.cudaDevAttrL2CacheSize, dev)
        except Exception:
            l2 = 64 << 20
        self.flush_buf = cupy.empty(max(2 * l2, 1 << 20), dtype=np.uint8)

    def __call__(self, fn, repeats: int) -> List[float]:
        cp = self.cupy
        fn()
        cp.cuda.Device().synchronize()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        out = []
        for i in range(repeats):
            self.flush_buf.fill(i & 0xFF)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            out.append(cp.cuda.get_elapsed_time(start, stop))
        return out


COPY_BYTES = 1 << 30


def copy_bandwidth(cupy, timer, repeats: int) -> Dict:
    """Device-to-device copy of 1 GiB, the memory-bound ops' yardstick, measured in this run."""
    n = COPY_BYTES // 4
    src = cupy.ones(n, dtype=np.float32)
    dst = cupy.empty_like(src)
    ts = timer(lambda: cupy.copyto(dst, src), repeats)
    med = statistics.median(ts)
    return {"bytes": 2.0 * n * 4, "median_ms": med, "GB/s": 2.0 * n * 4 / med / 1e6}


def _fp32_peak_tflops(props) -> Optional[float]:
    lanes = {(7, 0): 64, (7, 5): 64, (8, 0): 64}.get((props["major"], props["minor"]), 128)
    clock_khz = props.get("clockRate", 0) or 0
    if not clock_khz:
        return None
    return props["multiProcessorCount"] * lanes * 2 * clock_khz * 1e3 / 1e12


# ---------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------
def run_cases(cases: Iterable[Case], timer, repeats: int, progress: bool = True) -> List[Dict]:
    cases = list(cases)
    rows = []
    for i, case in enumerate(cases, 1):
        if progress:
            bar = "#" * (20 * i // len(cases))
            print(f"\r[{bar:<20}] {i}/{len(cases)} {case.op} {case.variant} {case.size}".ljust(79),
                  end="", file=sys.stderr, flush=True)
        ts = timer(case.fn, case.repeats or repeats)
        med = statistics.median(ts)
        scale = 1e9 if case.unit == "TFLOP/s" else 1e6
        row = dict(op=case.op, dtype=case.dtype, variant=case.variant, size=case.size, unit=case.unit,
                   value=case.work / med / scale, median_ms=med, min_ms=min(ts), max_ms=max(ts),
                   repeats=len(ts), vendor=case.vendor, group=case.group)
        if case.check is not None:
            ok, err = case.check()
            row.update(correct=bool(ok), error_ratio=err)
            if not ok:
                print(f"\nWRONG RESULT: {case.op} {case.variant} {case.size}: error {err:.3g} x the bound",
                      file=sys.stderr)
        rows.append(row)
    if progress and cases:
        print("\r" + " " * 79 + "\r", end="", file=sys.stderr, flush=True)
    by_group = {r["group"]: r for r in rows if r["vendor"]}
    for r in rows:
        base = by_group.get(r["group"])
        if base is not None:
            r["pct_vendor"] = 100.0 * base["median_ms"] / r["median_ms"]
    return rows


def format_rows(rows: List[Dict]) -> str:
    head = ("op", "dtype", "variant", "size", "median ms", "value", "unit", "% vendor", "% peak", "check")
    lines = [head]
    for r in rows:
        pct = f"{r['pct_vendor']:.1f}" if "pct_vendor" in r else "-"
        peak = f"{r['pct_peak']:.1f}" if "pct_peak" in r else "-"
        check = "-" if "correct" not in r else ("ok" if r["correct"] else "WRONG")
        lines.append((r["op"], r["dtype"], r["variant"], r["size"], f"{r['median_ms']:.3f}",
                      f"{r['value']:.2f}" if r["unit"] == "TFLOP/s" else f"{r['value']:.0f}",
                      r["unit"], pct, peak, check))
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(l)).rstrip()
                     for l in lines)


def plot(rows: List[Dict], folder: str) -> List[str]:
    """One PNG per (op, dtype): throughput against size, one line per variant, the vendor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    written = []
    for key in sorted({(r["op"], r["dtype"]) for r in rows}):
        sel = [r for r in rows if (r["op"], r["dtype"]) == key]
        fig, ax = plt.subplots(figsize=(8, 5))
        for variant in dict.fromkeys(r["variant"] for r in sel):
            pts = [(int(r["size"]), r["value"]) for r in sel if r["variant"] == variant]
            vendor = any(r["vendor"] for r in sel if r["variant"] == variant)
            ax.plot(*zip(*pts), "k--" if vendor else "-o", label=variant, linewidth=2 if vendor else 1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("size (M = N = K)" if key[0] == "gemm" else "size")
        ax.set_ylabel(sel[0]["unit"])
        ax.set_title(f"{key[0]} {key[1]}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        path = os.path.join(folder, f"{key[0]}_{key[1]}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def add_arguments(p) -> None:
    p.add_argument("--ops", nargs="+", choices=sorted(PROVIDERS), help="op families (default: all)")
    p.add_argument("--sizes", type=int, nargs="+", help="problem sizes (GEMM: M = N = K)")
    p.add_argument("--variants", nargs="+", help="SGEMM ladder steps to time (default: all)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per case (default 20 GPU, 7 CPU)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--json", metavar="FILE", help="write the raw results as JSON to FILE ('-' for stdout)")
    p.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def collect(args, gpu: bool):
    """(meta, rows) for this machine: the CUDA kernels with a GPU, the NumPy fallback without."""
    meta = {"pygpu_ops": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if gpu:
        os.environ.setdefault("CUPY_TF32", "0")
        os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
        import cupy

        repeats = args.repeats or (5 if args.quick else 20)
        timer = GpuTimer(cupy)
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        meta.update(backend="cuda", device=name, cc=f"{props['major']}.{props['minor']}",
                    cupy=cupy.__version__, fp32_peak_tflops=_fp32_peak_tflops(props))
        meta["copy"] = copy_bandwidth(cupy, timer, repeats)
        env = Env(cupy, True, tuple(args.sizes or (GPU_QUICK_SIZES if args.quick else GPU_SIZES)),
                  args.variants, args.quick)
    else:
        repeats = args.repeats or (3 if args.quick else 7)
        timer = CpuTimer()
        meta.update(backend="numpy", device=f"CPU ({platform.processor() or platform.machine()})")
        env = Env(np, False, tuple(args.sizes or (CPU_QUICK_SIZES if args.quick else CPU_SIZES)),
                  args.variants, args.quick)
    meta["repeats"] = repeats
    cases = [c for op in (args.ops or PROVIDERS) for c in PROVIDERS[op](env)]
    rows = run_cases(cases, timer, repeats, progress=not args.no_progress and sys.stderr.isatty())
    peak = meta.get("fp32_peak_tflops")
    copy_gbs = meta.get("copy", {}).get("GB/s")
    for r in rows:
        if r["unit"] == "TFLOP/s" and r["dtype"] == "float32" and peak:
            r["pct_peak"] = 100.0 * r["value"] / peak
        if r["unit"] == "GB/s" and copy_gbs:
            r["pct_copy"] = 100.0 * r["value"] / copy_gbs
    return meta, rows


def main(args) -> int:
    why = backends.problem("cuda")
    if why is None:
        print("pygpu-ops bench: timing the CUDA kernels against the vendor libraries (TF32 off)")
    else:
        print(f"pygpu-ops bench: no GPU here ({why}); timing the NumPy fallback against plain "
              f"NumPy/BLAS. Emulator runs are never timed.")
    meta, rows = collect(args, gpu=why is None)
    if "copy" in meta:
        print(f"device-to-device copy: {meta['copy']['GB/s']:.0f} GB/s")
    print(format_rows(rows))
    doc = {"meta": meta, "results": rows}
    if args.json:
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    if args.plot:
        for path in plot(rows, args.plot):
            print(f"wrote {path}")
    wrong = [r for r in rows if r.get("correct") is False]
    return 1 if wrong else 0
