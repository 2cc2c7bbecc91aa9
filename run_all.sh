#!/usr/bin/env bash
# Run the study end to end: `python -m kdlib study` with these knobs as its flags. Per setup: train (or resume) in the
# terminal with progress and an ETA, then execute its notebook (papermill) on the finished runs, beside the next
# setup's training; then the summary notebook, one verdict line per setup, teacher seed and alpha, and the scorecard.
#   PROFILE=smoke|cpu|paper (default cpu)   KDLIB_DATA_DIR (default data/)   DEVICE=cpu|cuda (default cpu)
#   OUT (default results/)   FIGURES (default figures/)
#   SUITE=core|experiments|full|paper or "setup ..." (your own setups too: "mypkg.kd:my_setup my-kd.toml"; older
#   form "notebook:setup ..." too; default core: the two
#   language setups, CIFAR-10 and FSDD, all on built-in data; experiments: temperature, feature-map, adversarial and
#   width-scaling setups on TinyShakespeare; full: both; paper: every setup the paper reports, in Table 95's order)
#   LAUNCHER=serial|local|slurm|ray (default local: one single-thread process per core)   WORKERS (default 2)
#   PACK (default 1; a number, or auto: the best pack size, probed once on a GPU)   COMPILE=auto|on|off (default auto)
#   CHECKPOINT_EVERY (minutes, default 10; 0: only when SIGTERM asks): a killed or preempted run resumes from its last
#   checkpoint, to the same bits
#   LOG_TO=tensorboard|mlflow: mirror each run's loss curve and result, and each setup's analysis, under OUT/tracking/
#   SUMMARY=0 skips the summary notebook (when re-running a few setups)
#   NOTEBOOK_JOBS (default 2): study notebooks executed at once, beside the next setup's training
#   READINGS="ID=CHOICE ...": read the paper's ambiguities otherwise than the defaults, in every setup that uses
#   them (kdlib/setups/readings.py; the README's table); results go under <setup>+ID=CHOICE
#   GPUS_PER_RUN, SLURM_PARTITION, TIME_LIMIT (minutes per task): the slurm/ray launchers' options, when set
#   (every variable a launcher declares: python -m kdlib launchers)
# Re-running after an interruption resumes: finished runs are never trained again, unfinished ones go on from their
# last checkpoint.
set -euo pipefail
cd "$(dirname "$0")"
export KDLIB_DATA_DIR=${KDLIB_DATA_DIR:-data}
flags=(--profile "${PROFILE:-cpu}" --data-dir "$KDLIB_DATA_DIR" --device "${DEVICE:-cpu}" --out "${OUT:-results}"
       --figures "${FIGURES:-figures}" --launcher "${LAUNCHER:-local}" --workers "${WORKERS:-2}" --pack "${PACK:-1}"
       --compile "${COMPILE:-auto}" --notebook-jobs "${NOTEBOOK_JOBS:-2}" --checkpoint-every "${CHECKPOINT_EVERY:-10}")
[[ "${SUMMARY:-1}" == 0 ]] && flags+=(--no-summary)
[[ -n "${LOG_TO:-}" ]] && flags+=(--log-to "$LOG_TO")
# each launcher's own options, from the variables it declares: "VARIABLE --flag" lines (a failure stops the script)
declared=$(python3 -m kdlib launchers --env)
while read -r var flag; do
  if [[ -n "$var" && -n "${!var:-}" ]]; then flags+=("$flag" "${!var}"); fi
done <<< "$declared"
for r in ${READINGS:-}; do flags+=(--reading "$r"); done
suite=${SUITE:-core}
case "$suite" in
  core|experiments|full|paper) exec python -m kdlib study --suite "$suite" "${flags[@]}" ;;
  *) set -f; names=($suite); set +f; exec python -m kdlib study "${names[@]}" "${flags[@]}" ;;
esac
