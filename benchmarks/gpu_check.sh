#!/usr/bin/env bash
# On a lent GPU (budgeted at 8 minutes on one H200; not yet run on one): per-model seconds of four paper-profile setups one by one,
# packed (auto) and packed + compiled, achieved TFLOP/s against the measured bf16 matmul rate, a pack-equals-one-by-one
# check, and the cpu profile of tinyshakespeare-nanogpt end to end with --pack auto. Writes results/gpu_check.json
# (read by `python -m kdlib plan`). Dry run on a CPU: bash benchmarks/gpu_check.sh --device cpu --profile smoke
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.gpu_check --data-dir "${KDLIB_DATA_DIR:-data}" "$@"
