#!/usr/bin/env bash
# One GPU check for a bare GPU machine: CuPy, PyTorch and pytest, no network, perhaps no
# hypothesis, scikit-learn, matplotlib, g++ or nvtx (tests needing them skip, saying why; a missing
# nvtx only turns the NVTX ranges off). Runs from the source tree (PYTHONPATH=.), installs nothing:
#
#   bash profiling/gpu_check.sh [--dry-run] [OUT]          (OUT defaults to $OUT)
#
# Writes at most 4 files into OUT, no folders:
#   gpu_check.log   everything printed, step by step, with each step's exit status and duration
#   bench.json      the benchmark: kernel time (captured CUDA graph replayed between events) and op
#                   time (the synchronized public call) per case; written even when the bench fails
#                   or is stopped by its timeout (then meta.interrupted says so)
#   plots.tgz       the charts (absent, and the log says why, without matplotlib)
#   ncu.json        Nsight Compute's global/shared request, sector and wavefront counters and
#                   kernel times for the analysis cases (profiling/ncu_counters.py), to set next
#                   to the emulator's counts and the modeled times (meta.unavailable: why not)
#
# Recording the results (on the development machine, after the files are back):
#   python profiling/update_readme.py --add OUT/bench.json --add-ncu OUT/ncu.json
#   git add profiling/results/ README.md && git commit    (files it as profiling/results/<device>_<date>.json
#                                                          and regenerates the README results table)
#
# Budget: one call, well under 10 minutes on an H200. Each step is capped with `timeout` (seconds):
#   nvidia-smi 10 | info 30 | selftest 90 | GPU tests 140 | bench 170 | ncu 80 | compile gate 20
#   (sum 540)
# and the whole script stops starting steps once TOTAL_BUDGET (540 s) is spent.
#
# GPU_CHECK_TESTS (default: tests) names the test paths of the GPU-test step; PYTHON the interpreter.
#
# --dry-run exercises the script end to end on a machine without a GPU: the steps that need one
# (nvidia-smi, the cuda selftest) are reported as skipped, the GPU tests run (and skip, with their
# reasons), the bench times the NumPy fallback on one small GEMM and the compile gate builds one kernel.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:-${OUT:?give an output folder or set OUT}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0
TOTAL_BUDGET=540
log="$out/gpu_check.log"
: >"$log"
status=0

say() { echo "$*" | tee -a "$log"; }

# step NAME GPU CAP COMMAND...: runs COMMAND under `timeout CAP` (less if the total budget is
# nearly spent), logging its output, exit status and duration; GPU=1 marks a step that needs a
# GPU, skipped under --dry-run. A non-zero exit makes the script's status 1.
step() {
  local name=$1 gpu=$2 cap=$3
  shift 3
  local left=$((TOTAL_BUDGET - SECONDS))
  if [ "$dry" -eq 1 ] && [ "$gpu" -eq 1 ]; then
    say "=== $name: skipped (dry run: needs a GPU): $*"
    return
  fi
  if [ "$left" -lt 10 ]; then
    say "=== $name: skipped (the ${TOTAL_BUDGET} s budget is spent)"
    status=1
    return
  fi
  [ "$cap" -le "$left" ] || cap=$left
  say "=== $name (timeout ${cap} s, $(date -u +%H:%M:%S)): $*"
  local t0=$SECONDS
  timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -ne 124 ] || say "=== $name: TIMED OUT after ${cap} s"
  say "=== $name: exit $rc in $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || status=1
}

if [ "$dry" -eq 1 ]; then
  say "gpu_check: DRY RUN (no GPU needed); python $PY"
  bench_args=(--ops gemm --sizes 32 --repeats 1)
  check_args=(--arch sm_90 --filter relu)
else
  say "gpu_check: python $PY"
  bench_args=()
  check_args=(--arch sm_90)
fi

step nvidia-smi 1 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
step info 0 30 "$PY" -m pygpu_ops info
step selftest 1 90 "$PY" -m pygpu_ops selftest --backend cuda -q
# shellcheck disable=SC2086  # GPU_CHECK_TESTS may name several paths
step gpu-tests 0 140 "$PY" -m pytest -q -rs -m gpu -p no:cacheprovider ${GPU_CHECK_TESTS:-tests}
rm -rf "$out/plots"
step bench 0 170 "$PY" -m pygpu_ops bench --no-progress --json "$out/bench.json" --plot "$out/plots" ${bench_args[@]+"${bench_args[@]}"}
[ -s "$out/bench.json" ] || say "=== bench: no bench.json written"
# Measured counters and times next to the emulator's counts and the model: stops starting cases
# after 60 s, so the step ends within its cap.
step ncu 1 80 "$PY" profiling/ncu_counters.py "$out/ncu.json" --budget 60

# The compile gate needs the nvrtc extra (cuda-bindings + the NVRTC wheel), which a bare GPU
# machine may lack: reported in the log, not counted in the status.
saved=$status
step compile-gate 0 20 "$PY" -m pygpu_ops check ${check_args[@]+"${check_args[@]}"}
status=$saved

if [ -d "$out/plots" ]; then
  if ls "$out/plots"/*.png >/dev/null 2>&1; then
    tar -C "$out" -czf "$out/plots.tgz" plots && say "=== plots: $(ls "$out/plots" | wc -l) charts in plots.tgz"
  fi
  rm -rf "$out/plots"
fi
say "gpu_check: status $status, $SECONDS s, files: $(cd "$out" && ls | tr '\n' ' ')"
exit $status
