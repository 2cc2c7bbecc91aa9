#!/usr/bin/env bash
# On a lent GPU, budgeted at 5 minutes (--budget 300; not yet run on a GPU): per-model seconds of four paper-profile
# setups one by one and packed, like with like (the pack's KD share, 3 of 7 at the paper's grid, its teacher path,
# the setup's precision, compiled alike), achieved TFLOP/s against the measured matmul rate of the precision each
# setup trains in, fallbacks, a pack-equals-one-by-one check, and tinyshakespeare-nanogpt's cpu profile end to end
# with --pack auto. Each line is printed as measured; <out> (--out, default results/) gets gpu_check.json (read by
# `python -m kdlib plan`) and gpu_check_report.json after each section. The matmul rates, the float64 check and
# tinyshakespeare-nanogpt's row (compiles: the student alone and packed, the live teacher at both batch sizes) always
# run; the other setups, the bf16 check and the end-to-end run only while their estimated time is left (a setup: as
# long as the slowest so far), each skip printed. Another budget: --budget SECONDS.
# Dry run on a CPU: bash benchmarks/gpu_check.sh --device cpu --profile smoke --compile off
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.gpu_check --data-dir "${KDLIB_DATA_DIR:-data}" --budget 300 "$@"
