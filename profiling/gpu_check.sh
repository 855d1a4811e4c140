#!/usr/bin/env bash
# One GPU check, for a GPU machine without network: the GPU tests, the selftest, the benchmark and
# the offline compile report, all from the source tree (PYTHONPATH=.), results written to $1 (or
# $OUT). Installs nothing. A missing `nvtx` package only turns the NVTX ranges off.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:?give an output folder or set OUT}}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0
stamp=$(date -u +%Y%m%dT%H%M%SZ)
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$out/nvidia-smi.csv" 2>&1 || status=1
python -m pygpu_ops.cli info 2>&1 | tee "$out/info.log" || status=1
python -m pygpu_ops.cli selftest --backend cuda -q 2>&1 | tee "$out/selftest.log" || status=1
python -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$out/pytest_gpu.log" || status=1
timeout 300 python -m pygpu_ops.cli bench --json "$out/bench_$stamp.json" 2>&1 | tee "$out/bench.log" || status=1
python -m pygpu_ops.cli check >"$out/check.log" 2>&1 || echo "compile gate unavailable or failed (see check.log)"
echo "gpu_check: status $status"
exit $status
