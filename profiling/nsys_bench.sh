#!/usr/bin/env bash
# Nsight Systems over a benchmark run, with the pygpu_ops NVTX ranges (one per op call, named
# op:variant), then the NVTX and kernel summaries exported to CSV.
#   profiling/nsys_bench.sh [out_dir] [bench arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-profiling/nsys}; shift || true
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
nsys profile --trace=cuda,nvtx --force-overwrite true -o "$out/bench" \
    python -m pygpu_ops.cli bench --quick --no-progress "$@"
nsys stats --report nvtx_sum,cuda_gpu_kern_sum --format csv --force-export true \
    -o "$out/bench" "$out/bench.nsys-rep"
echo "wrote $out/bench.nsys-rep and $out/bench_*.csv"
