#!/usr/bin/env bash
# What a maintainer runs on a GPU runner, in order; any failure fails the job.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUPY_TF32=0 NVIDIA_TF32_OVERRIDE=0

nvidia-smi
pygpu-ops info
pygpu-ops selftest
python -m pytest -q -m gpu tests
pygpu-ops bench --quick
