#!/usr/bin/env bash
# On a lent GPU (a few minutes): per-model time of the paper profile of tinyshakespeare-nanogpt and the
# extrapolation to its 71-model grid per teacher seed. Usage: bash benchmarks/gpu_check.sh [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/gpu_check.py --device cuda --data-dir "${KDLIB_DATA_DIR:-data}" "$@"
