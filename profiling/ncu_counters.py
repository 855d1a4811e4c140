#!/usr/bin/env python3
"""Measure with Nsight Compute what ``pygpu-ops analyze`` counts and models, on a GPU.

    python profiling/ncu_counters.py OUT.json [--cases gemm:naive ...] [--size 4096]

Runs ``profiling/run_op.py --repeats 1`` on each chosen analysis case under ``ncu`` (one process
per case, so each measured launch is tied to its case; ``launch`` is its index within the case,
in the order the emulator counted them too), profiling every launch of this package's kernels
(``-k`` on their symbols; the first launch of a module is as good as a later one: ncu times the
kernel alone, caches flushed). No case is started after ``--budget`` seconds.
Records per launch the counters the emulator computes, Nsight Compute's names:

* global: ``l1tex__t_requests_pipe_lsu_mem_global_op_{ld,st}.sum`` and
  ``l1tex__t_sectors_pipe_lsu_mem_global_op_{ld,st}.sum``;
* shared: ``smsp__sass_inst_executed_op_shared_{ld,st}.sum`` (requests) and
  ``l1tex__data_pipe_lsu_wavefronts_mem_shared_op_{ld,st}.sum`` (wavefronts);
* ``gpu__time_duration.sum``, with ``--clock-control none`` (the GPU's own boost clock, as the
  model assumes) and ncu's default cache control (L2 flushed before each kernel).

Writes OUT.json always: ``{"meta": ..., "rows": [...]}``, or ``meta.unavailable`` saying why
nothing was measured (no ncu, ncu failed). ``profiling/update_readme.py`` puts the measured
counts and time next to the emulator's counts and the modeled time.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: ncu metric -> the analysis row key it measures.
METRICS = {
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum": "gld_requests",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum": "gld_sectors",
    "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum": "gst_requests",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum": "gst_sectors",
    "smsp__sass_inst_executed_op_shared_ld.sum": "lds_requests",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum": "lds_wavefronts",
    "smsp__sass_inst_executed_op_shared_st.sum": "sts_requests",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum": "sts_wavefronts",
    "gpu__time_duration.sum": "time",
}

#: The default cases: the SGEMM ladder, DGEMM, the softmax steps and the memory-bound ops.
DEFAULT_CASES = ("gemm:naive", "gemm:coalesced", "gemm:smem_tiled", "gemm:blocktile_1d",
                 "gemm:blocktile_2d", "gemm:vectorized", "gemm:double_buffered", "gemm:warptile",
                 "gemm:dgemm", "softmax:naive", "softmax:online", "softmax:warp", "softmax:block",
                 "relu:relu_vec128", "nchw_to_nhwc:transpose_tiled", "max_pool2d:nchw",
                 "max_pool2d:nhwc")


def _number(text: str):
    text = text.replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


def parse_csv(text: str):
    """Rows of ``ncu --csv --page raw``: one per profiled launch, (kernel name, {metric: value}),
    times in microseconds (ncu's unit row says which unit it used)."""
    lines = [l for l in text.splitlines() if l.startswith('"')]
    if len(lines) < 2:
        return []
    table = list(csv.reader(io.StringIO("\n".join(lines))))
    head, units, body = table[0], table[1], table[2:]
    col = {name: i for i, name in enumerate(head)}
    name_col = col.get("Kernel Name")
    out = []
    for r in body:
        if name_col is None or len(r) != len(head):
            continue
        m = {}
        for metric, key in METRICS.items():
            i = col.get(metric)
            if i is None:
                continue
            v = _number(r[i])
            if v is not None and key == "time":
                scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
                v *= scale.get(units[i].strip(), 1.0)
            m[key] = v
        out.append((r[name_col], m))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="JSON file to write")
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), metavar="OP:VARIANT")
    p.add_argument("--size", type=int, default=4096, help="GEMM size (default 4096)")
    p.add_argument("--ncu", default=shutil.which("ncu") or "/usr/local/cuda/bin/ncu")
    p.add_argument("--budget", type=float, default=70.0,
                   help="seconds after which no further case is started (default 70)")
    args = p.parse_args(argv)
    meta = {"tool": "ncu", "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"), "size": args.size, "cases": args.cases,
            "clock_control": "none", "metrics": METRICS}
    doc = {"meta": meta, "rows": []}
    t0 = time.monotonic()
    try:
        if not os.path.exists(args.ncu):
            meta["unavailable"] = "ncu (Nsight Compute CLI) not found"
            return 0
        sys.path.insert(0, ROOT)
        from pygpu_ops._runtime.kernels import all_kernels

        symbols = sorted({k.symbol for k in all_kernels()})
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        errors = []
        for spec in args.cases:
            if time.monotonic() - t0 > args.budget:
                meta.setdefault("skipped", []).append(spec)
                continue
            op, _, variant = spec.partition(":")
            cmd = [args.ncu, "--csv", "--page", "raw", "--clock-control", "none",
                   "--metrics", ",".join(METRICS), "-k", "regex:^(" + "|".join(symbols) + ")",
                   sys.executable, os.path.join(ROOT, "profiling", "run_op.py"), "--repeats",
                   "1", "--size", str(args.size), "--cases", spec]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                errors.append(f"{spec}: ncu exited {proc.returncode}: "
                              f"{proc.stderr.strip()[-1000:]}")
                continue
            # one process per case: its launches in order, as the emulator saw them
            for i, (name, m) in enumerate(parse_csv(proc.stdout)):
                doc["rows"].append({"op": op, "variant": variant, "launch": i, "kernel": name,
                                    **m})
        if errors:
            meta["errors"] = errors
        if not doc["rows"]:
            meta["unavailable"] = "ncu measured nothing" + (f": {errors[0]}" if errors else "")
        meta["device"] = _device_name()
        return 0 if not meta.get("unavailable") else 1
    finally:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


def _device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "?"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
