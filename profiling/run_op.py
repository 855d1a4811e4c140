#!/usr/bin/env python3
"""Run one op variant on the GPU a few times, for a profiler to attach to.

    python profiling/run_op.py gemm warptile 4096 [--repeats 3]

Each call sits in the NVTX range ``gemm:<variant>`` of domain ``pygpu_ops``; the first call
compiles the module, so profile with ``--launch-skip 1`` (ncu) or look at the later ranges (nsys).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", choices=["gemm"])
    p.add_argument("variant", help="a name from pygpu_ops.sgemm_variants(), or 'dgemm'")
    p.add_argument("size", type=int, nargs="?", default=4096)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("CUPY_TF32", "0")
    import cupy
    import numpy as np

    import pygpu_ops as po

    dtype = np.float64 if args.variant == "dgemm" else np.float32
    variant = "auto" if args.variant == "dgemm" else args.variant
    rng = cupy.random.default_rng(0)
    a = rng.standard_normal((args.size, args.size), dtype=dtype)
    b = rng.standard_normal((args.size, args.size), dtype=dtype)
    c = cupy.empty_like(a)
    for _ in range(args.repeats):
        po.gemm(a, b, variant=variant, out=c)
    cupy.cuda.Device().synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
