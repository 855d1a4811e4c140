#!/usr/bin/env bash
# One GPU check, for a GPU machine without network (well inside 8 minutes): the selftest, the
# GPU test suite, the benchmark (JSON + PNG charts) and the offline compile report, run from the
# source tree (PYTHONPATH=.), installing nothing. Writes into $1 (or $OUT):
#   gpu_check.log   everything printed, step by step
#   bench.json      the raw benchmark results: record them with
#                   python profiling/update_readme.py --add bench.json  (files it under results/, regenerates the README table)
#   plots.tgz       the charts
# A missing `nvtx` package only turns the NVTX ranges off.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:?give an output folder or set OUT}}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0
log="$out/gpu_check.log"
: >"$log"
status=0
step() {
  echo "=== $* ($(date -u +%H:%M:%S))" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== exit $rc" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}

step nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
step python -m pygpu_ops.cli info
step python -m pygpu_ops.cli selftest --backend cuda -q
step python -m pytest -q -m gpu -p no:cacheprovider tests
step timeout 360 python -m pygpu_ops.cli bench --no-progress --json "$out/bench.json" --plot "$out/plots"
# The compile gate needs the nvrtc extra, which a bare GPU machine may lack: report, don't fail.
python -m pygpu_ops.cli check >>"$log" 2>&1 || echo "=== compile gate unavailable or failed (see log)" | tee -a "$log"
if [ -d "$out/plots" ]; then tar -C "$out" -czf "$out/plots.tgz" plots && rm -rf "$out/plots"; fi
echo "gpu_check: status $status" | tee -a "$log"
exit $status
