#!/usr/bin/env bash
# Run the study end to end: per setup, train (or resume) in the terminal with progress and an ETA, then execute
# its notebook (papermill) on the finished runs; then the summary notebook and the reproduction scorecard.
#   PROFILE=smoke|cpu|paper (default cpu)   KDLIB_DATA_DIR (default data/)   DEVICE=cpu|cuda (default cpu)
#   OUT (default results/)   FIGURES (default figures/)
#   SUITE=core|experiments|full|paper or "notebook:setup ..." (default core: the two language setups, CIFAR-10 and
#   FSDD, all on built-in data; experiments: temperature, feature-map, adversarial and width-scaling setups on
#   TinyShakespeare; full: both; paper: every setup the paper reports, in the order of its Table 95)
#   LAUNCHER=serial|local|slurm|ray (default local: one single-thread process per core)   WORKERS (default 2)
#   PACK (default 1; a number, or auto: the best pack size, probed once on a GPU)   COMPILE=auto|on|off (default auto)
#   SUMMARY=0 skips the summary notebook (when re-running a few setups)
#   NOTEBOOK_JOBS (default 2): study notebooks executed at once, beside the next setup's training
#   READINGS="ID=CHOICE ...": read the paper's ambiguities otherwise than the defaults, in every setup that uses
#   them (kdlib/setups/readings.py; the README's table); results go under <setup>+ID=CHOICE
#   GPUS_PER_RUN, SLURM_PARTITION, TIME_LIMIT (minutes per task): the slurm/ray launchers' options, when set
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
COMPILE=${COMPILE:-auto}
READINGS=${READINGS:-}
export KDLIB_DATA_DIR=${KDLIB_DATA_DIR:-data}
cluster=()
[[ -n "${GPUS_PER_RUN:-}" ]] && cluster+=(--gpus-per-run "$GPUS_PER_RUN")
[[ -n "${SLURM_PARTITION:-}" ]] && cluster+=(--slurm-partition "$SLURM_PARTITION")
[[ -n "${TIME_LIMIT:-}" ]] && cluster+=(--time-limit "$TIME_LIMIT")
CORE="language:tinyshakespeare-nanogpt language:tinyshakespeare-nanogpt-to-picogpt vision:cifar10-resnet18 audio:fsdd-vggish"
EXPERIMENTS="language:tinyshakespeare-nanogpt-to-picogpt-t2 language:tinyshakespeare-nanogpt-to-picogpt-t4
  language:tinyshakespeare-nanogpt-featuremap-block4 language:tinyshakespeare-nanogpt-featuremap-block5
  language:tinyshakespeare-adversarial language:tinyshakespeare-width-scaling"
PAPER="vision:svhn-resnet18 vision:svhn-vgg19 vision:svhn-vit vision:tinyimagenet-resnet50
  vision:tinyimagenet-vgg19 vision:tinyimagenet-resnet50-randaug vision:tinyimagenet-vgg19-randaug
  audio:speechcommands-vggish audio:speechcommands-ast audio:urbansound8k-vggish audio:urbansound8k-ast
  language:tinyshakespeare-nanogpt vision:tinyimagenet-resnet50-to-resnet18 vision:imagenet-resnet50-to-resnet18
  language:tinyshakespeare-nanogpt-to-picogpt language:tinyshakespeare-width-scaling
  vision:imagenet-resnet50-to-resnet18-t2 language:tinyshakespeare-nanogpt-to-picogpt-t2
  language:tinyshakespeare-nanogpt-to-picogpt-t4 language:tinyshakespeare-nanogpt-featuremap-block4
  language:tinyshakespeare-nanogpt-featuremap-block5 language:tinyshakespeare-adversarial
  vision:tinyimagenet-resnet50-label-smoothing"
case "${SUITE:-core}" in
  core) SUITE=$CORE ;;
  experiments) SUITE=$EXPERIMENTS ;;
  full) SUITE="$CORE $EXPERIMENTS" ;;
  paper) SUITE=$PAPER ;;
esac
names=""
for item in $SUITE; do names="$names ${item#*:}"; done
# shellcheck disable=SC2086
ready=" $(python -m kdlib list --ready --data-dir "$KDLIB_DATA_DIR" $names | tr '\n' ' ') "
echo "== $PROFILE profile on $DEVICE (launcher $LAUNCHER, $WORKERS workers, pack $PACK, compile $COMPILE); data in $KDLIB_DATA_DIR"
for name in $names; do
  if [[ "$ready" != *" $name "* ]]; then
    echo "-- skipping $name: its data is missing"
    python -m kdlib list --data-dir "$KDLIB_DATA_DIR" "$name" | tail -n 2
  fi
done

notebook() {  # papermill, its kernel's log kept beside the executed notebook (and shown only if it fails)
  local log="${2%.ipynb}.log"
  if ! python -m papermill --no-progress-bar --log-level WARNING "$@" 2>"$log"; then
    tail -n 20 "$log"
    return 1
  fi
}

failed=""
failed_notebooks=$(mktemp)
trap 'rm -f "$failed_notebooks"' EXIT
NOTEBOOK_JOBS=${NOTEBOOK_JOBS:-2}
for item in $SUITE; do
  notebook=${item%%:*}
  setup=${item#*:}
  [[ "$ready" == *" $setup "* ]] || continue
  dest="$OUT/$setup/$PROFILE"
  mkdir -p "$dest"
  echo "== $setup ($PROFILE)"
  readings=()  # the chosen readings this setup uses
  for r in $READINGS; do
    python -m kdlib list --data-dir "$KDLIB_DATA_DIR" "$setup" | grep -q "readings: .*${r%%=*}=" && readings+=(--reading "$r")
  done
  if ! python -m kdlib run "$setup" --profile "$PROFILE" --data-dir "$KDLIB_DATA_DIR" --out "$OUT" \
      --device "$DEVICE" --launcher "$LAUNCHER" --workers "$WORKERS" --pack "$PACK" --compile "$COMPILE" \
      ${readings[@]+"${readings[@]}"} ${cluster[@]+"${cluster[@]}"}; then
    failed="$failed $setup"
    continue
  fi
  echo "   notebooks/$notebook.ipynb -> $dest/$notebook.ipynb"
  while (( $(jobs -rp | wc -l) >= NOTEBOOK_JOBS )); do wait -n || true; done
  { notebook "notebooks/$notebook.ipynb" "$dest/$notebook.ipynb" \
      -p setup "$setup" -p profile "$PROFILE" -p data_dir "$KDLIB_DATA_DIR" -p out "$OUT" \
      -p figures "$FIGURES" -p device "$DEVICE" -p launcher "$LAUNCHER" -p workers "$WORKERS" \
      -p pack "$PACK" -p compile "$COMPILE" -p readings "${readings[*]//--reading /}" \
      || echo " $setup" >>"$failed_notebooks"; } &
done
wait  # every study notebook has run
failed="$failed$(tr -d '\n' <"$failed_notebooks")"
if [[ "${SUMMARY:-1}" != 0 ]]; then
  echo "== summary ($PROFILE) -> $OUT/summary-$PROFILE.ipynb"
  notebook notebooks/summary.ipynb "$OUT/summary-$PROFILE.ipynb" \
    -p out "$OUT" -p figures "$FIGURES" -p profile "$PROFILE" -p data_dir "$KDLIB_DATA_DIR"
fi
echo "== verdicts ($PROFILE)"
python -m kdlib summary --profile "$PROFILE" --out "$OUT" || true  # exits 2 when nothing was collected
python -m kdlib scorecard --profile "$PROFILE" --out "$OUT" || true
if [[ "${SUMMARY:-1}" != 0 ]]; then
  echo "done: tables and figures in $FIGURES/, runs in $OUT/; open $OUT/summary-$PROFILE.ipynb (jupyter lab) for everything"
else
  echo "done: tables and figures in $FIGURES/, runs in $OUT/"
fi
if [[ -n "$failed" ]]; then
  echo "failed:$failed (see the messages above)"
  exit 1
fi
