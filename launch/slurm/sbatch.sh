#!/usr/bin/env bash
# Submit launch/slurm/atesd.sbatch for one preset with the allocation taken from the environment.
#
#   ATESD_OUTPUTS=/shared/atesd [ATESD_NODES=1] [ATESD_GPUS_PER_NODE=8] [ATESD_PARTITION=...] \
#       [ATESD_TIME=24:00:00] launch/slurm/sbatch.sh [--dry-run] PRESET [hydra overrides...]
#
# ATESD_OUTPUTS (required unless --dry-run): absolute path on shared storage for checkpoints and metrics
# (launch/submit.sh). Checks the preset locally first (launch/submit.sh --dry-run: resolved config +
# resource plan, no Ray, no GPU), then runs sbatch. --dry-run stops after printing the sbatch command
# and the local check.
# ATESD_SBATCH_ARGS adds raw sbatch arguments (e.g. "--account=abc --qos=high").
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dry_run=0
if [[ "${1:-}" == --dry-run ]]; then
    dry_run=1
    shift
fi
[[ $# -ge 1 ]] || { echo "sbatch.sh: usage: sbatch.sh [--dry-run] PRESET [hydra overrides...]" >&2; exit 2; }
preset="$1"
if ((!dry_run)) && [[ "${ATESD_OUTPUTS:-}" != /* ]]; then
    echo "sbatch.sh: ATESD_OUTPUTS='${ATESD_OUTPUTS:-}' must be an absolute path on shared storage (checkpoints and metrics go there; the Ray job's working copy is temporary)" >&2
    exit 2
fi
nodes="${ATESD_NODES:-1}"
gpus="${ATESD_GPUS_PER_NODE:-8}"
cmd=(sbatch --nodes="$nodes" --gpus-per-node="$gpus" --time="${ATESD_TIME:-24:00:00}"
    --job-name="atesd-$preset" --output="$REPO_ROOT/runs/slurm-%j.out")
[[ -n "${ATESD_PARTITION:-}" ]] && cmd+=(--partition="$ATESD_PARTITION")
# shellcheck disable=SC2206  # word splitting of the raw argument string is the point
[[ -n "${ATESD_SBATCH_ARGS:-}" ]] && cmd+=($ATESD_SBATCH_ARGS)
cmd+=("$REPO_ROOT/launch/slurm/atesd.sbatch" "$@")

printf '%q ' "${cmd[@]}"
printf '\n'
"$REPO_ROOT/launch/submit.sh" --dry-run "$preset" "trainer.nnodes=$nodes" "trainer.n_gpus_per_node=$gpus" "${@:2}"
((dry_run)) && exit 0
mkdir -p "$REPO_ROOT/runs"
ATESD_REPO="$REPO_ROOT" ATESD_GPUS_PER_NODE="$gpus" ATESD_OUTPUTS="$ATESD_OUTPUTS" exec "${cmd[@]}"
