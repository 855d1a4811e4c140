#!/usr/bin/env python3
"""Run op variants on the GPU a few times, for a profiler to attach to.

    python profiling/run_op.py gemm warptile 4096 [--repeats 3]
    python profiling/run_op.py --cases gemm:naive softmax:block relu:relu_vec128 [--size 4096]

The calls are the cases of ``pygpu-ops analyze`` (``pygpu_ops/analysis/cases.py``), run with
``backend="cuda"``, so a profiler measures exactly the launches the emulator counted. ``VARIANT``
is the case's variant (a ladder step, ``dgemm`` for the DGEMM case, ``nchw``/``nhwc`` for pooling
and convolution); ``SIZE`` is the GEMM size (other ops have fixed shapes). Each call sits in the
NVTX range ``<op>:<variant>`` of domain ``pygpu_ops`` (when the nvtx package is installed); the
first call compiles the module, so profile with ``--launch-skip 1`` (ncu) or look at the later
ranges (nsys).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def find_cases(specs, size):
    """The analysis cases named ``op:variant`` (GEMM at ``size``), in the order given."""
    from pygpu_ops import linalg
    from pygpu_ops.analysis import cases

    every = cases.cases(sizes=[size] if size else None)
    out = []
    for spec in specs:
        op, _, variant = spec.partition(":")
        if op == "gemm" and variant == "dgemm":
            variant = linalg.DGEMM.label
        found = [c for c in every if c.op == op and c.variant == variant]
        if not found:
            known = sorted({f"{c.op}:{c.variant}" for c in every})
            raise SystemExit(f"run_op.py: no case {spec!r}; known: {', '.join(known)}")
        out.append(found[0])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", nargs="?", help="e.g. gemm")
    p.add_argument("variant", nargs="?", help="e.g. warptile")
    p.add_argument("size", type=int, nargs="?", default=None, help="GEMM size (default 4096)")
    p.add_argument("--cases", nargs="+", metavar="OP:VARIANT", help="several cases, in order")
    p.add_argument("--size", type=int, dest="size_opt", help="GEMM size for --cases")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    specs = list(args.cases or [])
    if args.op:
        if not args.variant:
            p.error("give OP and VARIANT, or --cases")
        specs.insert(0, f"{args.op}:{args.variant}")
    if not specs:
        p.error("give OP VARIANT [SIZE] or --cases OP:VARIANT ...")
    os.environ.setdefault("CUPY_TF32", "0")
    import cupy

    for case in find_cases(specs, args.size or args.size_opt):
        for _ in range(args.repeats):
            case.run("cuda")
        cupy.cuda.Device().synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
