#!/usr/bin/env bash
# Where a step goes, on a lent GPU, budgeted at 2 minutes (--budget 120; not yet run on a GPU): one paper-profile
# Nano-GPT student step and one packed step (7 students of one seed, live teacher) under torch.profiler, compiled as
# CUDA runs are: wall and device time per step, kernels per step, the split between matrix products, attention and
# the rest, the top kernels, and the device's measured bf16, fp16, TF32 and float32 matmul rates. Each line is
# printed as measured; <out> (--out, default results/) gets gpu_profile.json after each section. The packed step is
# skipped, said so, if the student step's time is not left.
# Dry run on a CPU: bash benchmarks/gpu_profile.sh --device cpu --profile smoke
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.gpu_profile --data-dir "${KDLIB_DATA_DIR:-data}" --budget 120 "$@"
