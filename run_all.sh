#!/usr/bin/env bash
# Run the built-in study end to end: every study notebook (papermill), then the summary notebook.
#   PROFILE=smoke|cpu|paper (default cpu)   KDLIB_DATA_DIR (default data/)   DEVICE=cpu|cuda (default cpu)
#   OUT (default results/)   FIGURES (default figures/)
#   SUITE=core|experiments|full or "notebook:setup ..." (default core: the two language setups, CIFAR-10 and FSDD;
#   experiments: temperature, feature-map, adversarial and width-scaling setups on TinyShakespeare)
#   LAUNCHER=serial|local|slurm|ray (default local: one single-thread process per core)   WORKERS (default 2)
#   PACK (default 1: students one by one; >1 trains that many together per step: for small models on a GPU)
# Re-running after an interruption resumes: finished runs are never trained again.
set -euo pipefail
cd "$(dirname "$0")"
PROFILE=${PROFILE:-cpu}
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-results}
FIGURES=${FIGURES:-figures}
LAUNCHER=${LAUNCHER:-local}
WORKERS=${WORKERS:-2}
PACK=${PACK:-1}
export KDLIB_DATA_DIR=${KDLIB_DATA_DIR:-data}
CORE="language:tinyshakespeare-nanogpt language:tinyshakespeare-nanogpt-to-picogpt vision:cifar10-resnet18 audio:fsdd-vggish"
EXPERIMENTS="language:tinyshakespeare-nanogpt-to-picogpt-t2 language:tinyshakespeare-nanogpt-to-picogpt-t4
  language:tinyshakespeare-nanogpt-featuremap-block4 language:tinyshakespeare-nanogpt-featuremap-block5
  language:tinyshakespeare-adversarial language:tinyshakespeare-width-scaling"
case "${SUITE:-core}" in
  core) SUITE=$CORE ;;
  experiments) SUITE=$EXPERIMENTS ;;
  full) SUITE="$CORE $EXPERIMENTS" ;;
esac

for item in $SUITE; do
  notebook=${item%%:*}
  setup=${item#*:}
  dest="$OUT/$setup/$PROFILE"
  mkdir -p "$dest"
  echo "== $setup ($PROFILE) via notebooks/$notebook.ipynb -> $dest/$notebook.ipynb"
  python -m papermill --no-progress-bar "notebooks/$notebook.ipynb" "$dest/$notebook.ipynb" \
    -p setup "$setup" -p profile "$PROFILE" -p data_dir "$KDLIB_DATA_DIR" -p out "$OUT" \
    -p figures "$FIGURES" -p device "$DEVICE" -p launcher "$LAUNCHER" -p workers "$WORKERS" \
    -p pack "$PACK"
done
echo "== summary ($PROFILE) -> $OUT/summary-$PROFILE.ipynb"
python -m papermill --no-progress-bar notebooks/summary.ipynb "$OUT/summary-$PROFILE.ipynb" \
  -p out "$OUT" -p figures "$FIGURES" -p profile "$PROFILE" -p data_dir "$KDLIB_DATA_DIR"
echo "done: tables and figures in $FIGURES/, executed notebooks and runs in $OUT/"
