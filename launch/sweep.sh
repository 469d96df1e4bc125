#!/usr/bin/env bash
# The fixed-exposure sweep: one job per (alpha, seed), named <model>-fixed-a<alpha>-s<seed>.
#
#   launch/sweep.sh [--dry-run] [--slurm] MODEL [hydra overrides...]
#       MODEL: qwen3-1.7b | qwen3-4b | qwen3-8b (preset MODEL-fixed-sweep)
#       ATESD_ALPHAS (default "0 0.25 0.5 0.75 1"), ATESD_SEEDS (default "0 1 2")
#
# Each job is `launch/submit.sh --no-wait --job-name NAME MODEL-fixed-sweep controller.alpha=A
# preset.seed=S trainer.experiment_name=NAME [overrides]` (a running Ray cluster at RAY_ADDRESS), or with
# --slurm one `launch/slurm/sbatch.sh` allocation per job. --dry-run passes --dry-run to every job:
# each job's command, resolved config and resource plan; nothing is submitted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
flags=()
slurm=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) flags+=(--dry-run); shift ;;
        --slurm) slurm=1; shift ;;
        -*) echo "sweep.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { echo "sweep.sh: usage: sweep.sh [--dry-run] [--slurm] MODEL [hydra overrides...]" >&2; exit 2; }
model="$1"
shift
read -r -a alphas <<<"${ATESD_ALPHAS:-0 0.25 0.5 0.75 1}"
read -r -a seeds <<<"${ATESD_SEEDS:-0 1 2}"
for alpha in "${alphas[@]}"; do
    for seed in "${seeds[@]}"; do
        name="$model-fixed-a$alpha-s$seed"
        overrides=("controller.alpha=$alpha" "preset.seed=$seed" "trainer.experiment_name=$name" "$@")
        echo "== $name"
        if ((slurm)); then
            "${ATESD_SBATCH:-$here/slurm/sbatch.sh}" "${flags[@]}" "$model-fixed-sweep" "${overrides[@]}"
        else
            "${ATESD_SUBMIT:-$here/submit.sh}" "${flags[@]}" --no-wait --job-name "$name" "$model-fixed-sweep" \
                "${overrides[@]}"
        fi
    done
done
