#!/usr/bin/env bash
# Nsight Compute on one op variant: the kernel filtered by name and by NVTX range, the first
# (compiling) launch skipped, one launch profiled with --set full, sources correlated (the
# runtime compiles with -lineinfo when PYGPU_OPS_LINEINFO=1), then exported to CSV.
#   profiling/ncu_kernel.sh gemm warptile 4096 [out_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
op=${1:?op, e.g. gemm}; variant=${2:?variant, e.g. warptile}; size=${3:-4096}; out=${4:-profiling/ncu}
mkdir -p "$out"
if [ "$variant" = dgemm ]; then kernel=dgemm_blocktile_2d; range="$op:dgemm_blocktile_2d"; else kernel="sgemm_$variant"; range="$op:$variant"; fi
report="$out/${op}_${variant}_${size}"
export PYGPU_OPS_LINEINFO=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
ncu --nvtx --nvtx-include "pygpu_ops@${range}/" -k "regex:${kernel}" \
    --launch-skip 1 --launch-count 1 --set full --import-source yes \
    -f -o "$report" python profiling/run_op.py "$op" "$variant" "$size"
ncu --import "$report.ncu-rep" --csv --page raw >"$report.csv"
ncu --import "$report.ncu-rep" --csv --page details \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy >"$report.summary.csv"
echo "wrote $report.ncu-rep, $report.csv, $report.summary.csv"
