#!/usr/bin/env bash
# A slice of the paper at its own scale: tinyshakespeare-nanogpt's paper profile, teacher seed 0 and N student seeds
# (default 3) x the 7 conditions, one pack per student seed on CUDA (--pack seed), resumable; prints a line per run
# as each stage ends, its means beside the paper's Table 14 and its teacher beside Table 38, and keeps them in
# <out>/paper_slice.json (--out, default results/). No budget unless --budget SECONDS is given: then the teacher
# always trains, and a student seed (or the adversarial teacher) that would not fit is skipped, said so.
# Not yet run on a GPU. Estimated: --students 1 is 8 models x 5,000 steps, about 50 PFLOP at the default float32
# precision, so at least 12 minutes at an H100's 67 TFLOP/s float32 peak: it cannot meet 6 minutes as it stands
# (the teacher alone about 2-3 minutes); --reading training-precision=bf16 would, as other runs.
# Usage: bash benchmarks/paper_slice.sh [--students N] [--device cuda] [--profile paper] [--budget SECONDS]
# [--out DIR] [--pack seed|auto|K] [--reading ID=CHOICE ...] [--adversarial] (a reading of the paper, e.g.
# gpt-architecture=nanogpt; the adversarial teacher's "th" completions beside Table 30)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m benchmarks.paper_slice --data-dir "${KDLIB_DATA_DIR:-data}" "$@"
