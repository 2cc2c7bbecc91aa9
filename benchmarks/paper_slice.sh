#!/usr/bin/env bash
# A slice of the paper at its own scale: tinyshakespeare-nanogpt's paper profile, teacher seed 0 and N student seeds
# (default 3) x the 7 conditions, packed (--pack auto), resumable; prints its means beside the paper's Table 14 and
# its teacher beside Table 38. Usage: bash benchmarks/paper_slice.sh [--students N] [--device cuda] [--profile paper]
# [--reading ID=CHOICE ...] [--adversarial] (a reading of the paper, e.g. gpt-architecture=nanogpt; the adversarial
# teacher's "th" completions beside Table 30)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.paper_slice --data-dir "${KDLIB_DATA_DIR:-data}" "$@"
