#!/usr/bin/env bash
# Evaluate every saved step of one run on GPUs: `python -m recipe.atesd.evaluate_run` as a Ray job or a Slurm
# job (docs/evaluation.md, "From a run to the table").
#
#   ATESD_OUTPUTS=/shared/atesd launch/evaluate_run.sh [--dry-run] [--no-wait] [--slurm] [--gpus N] \
#       EXPERIMENT [evaluate_run options...] [-- evaluate overrides...]
#
# EXPERIMENT is the run's trainer.experiment_name: its checkpoints are $ATESD_OUTPUTS/checkpoints/EXPERIMENT
# (where launch/submit.sh puts them) and its results go to $ATESD_OUTPUTS/eval/EXPERIMENT/step_N/ (evaluate_run
# --out $ATESD_OUTPUTS/eval). The job runs on one node with N GPUs (default 8; evaluate starts one vLLM engine
# per GPU, data parallel):
#   Ray (default): ray job submit --entrypoint-num-gpus N, the repository as working_dir
#     (launch/runtime_env.yaml); --no-wait returns once submitted (outcome: launch/ray_job.sh wait ID).
#   --slurm: sbatch launch/slurm/evaluate_run.sbatch on one node (ATESD_PARTITION, ATESD_TIME default
#     24:00:00, ATESD_SBATCH_ARGS as launch/slurm/sbatch.sh); no Ray needed.
# Rerunning the same command resumes (finished steps are skipped, a step in progress continues).
# --dry-run prints the command; when the checkpoints are visible here it also runs evaluate_run's dry run
# (each step's plan; nothing exported or written).
# Environment: ATESD_OUTPUTS (required, absolute), RAY_ADDRESS (Ray, required unless --dry-run or --slurm),
# ATESD_JOB_PYTHON (python in the job, default python3), ATESD_PYTHON (local dry run, default .venv/bin/python).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() {
    echo "evaluate_run.sh: $*" >&2
    exit 2
}

dry_run=0
no_wait=0
slurm=0
gpus=8
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --no-wait) no_wait=1; shift ;;
        --slurm) slurm=1; shift ;;
        --gpus) [[ $# -ge 2 ]] || die "--gpus needs a value"; gpus="$2"; shift 2 ;;
        -h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || die "usage: evaluate_run.sh [--dry-run] [--no-wait] [--slurm] [--gpus N] EXPERIMENT [evaluate_run args...]"
experiment="$1"
shift
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus must be a positive integer, got '$gpus'"
outputs="${ATESD_OUTPUTS:-}"
[[ "$outputs" == /* ]] || die "ATESD_OUTPUTS='$outputs' must be an absolute path on shared storage (the run's checkpoints are under it; results go there)"
outputs="${outputs%/}"
for arg in "$@"; do
    [[ "$arg" == --out || "$arg" == --out=* ]] && die "do not pass --out: results go to \$ATESD_OUTPUTS/eval"
done
run_dir="$outputs/checkpoints/$experiment"
out_dir="$outputs/eval"
job_args=(-m recipe.atesd.evaluate_run "$run_dir" --out "$out_dir" "$@")
echo "evaluate_run.sh: checkpoints $run_dir -> results $out_dir/$experiment/step_N/ ($gpus GPUs, one node)" >&2

if ((slurm)); then
    cmd=(sbatch --nodes=1 --gpus-per-node="$gpus" --time="${ATESD_TIME:-24:00:00}"
        --job-name="eval-$experiment" --output="$REPO_ROOT/runs/slurm-%j.out")
    [[ -n "${ATESD_PARTITION:-}" ]] && cmd+=(--partition="$ATESD_PARTITION")
    # shellcheck disable=SC2206  # word splitting of the raw argument string is the point
    [[ -n "${ATESD_SBATCH_ARGS:-}" ]] && cmd+=($ATESD_SBATCH_ARGS)
    cmd+=("$REPO_ROOT/launch/slurm/evaluate_run.sbatch" "${job_args[@]:2}")
else
    ((dry_run)) || [[ -n "${RAY_ADDRESS:-}" ]] || die "RAY_ADDRESS is not set (e.g. http://HEAD_IP:8265); use --slurm or --dry-run"
    cmd=(ray job submit --address "${RAY_ADDRESS:-<RAY_ADDRESS>}" --runtime-env launch/runtime_env.yaml
        --entrypoint-num-gpus "$gpus" --submission-id "eval-$experiment-$(date +%Y%m%d-%H%M%S)")
    ((no_wait)) && cmd+=(--no-wait)
    cmd+=(-- "${ATESD_JOB_PYTHON:-python3}" "${job_args[@]}")
fi

cd "$REPO_ROOT"
if ((dry_run)); then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    if [[ -d "$run_dir" ]]; then
        py="${ATESD_PYTHON:-}"
        if [[ -z "$py" ]]; then
            if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then py="$REPO_ROOT/.venv/bin/python"; else py=python3; fi
        fi
        has_sep=0
        for arg in "$@"; do [[ "$arg" == -- ]] && has_sep=1; done
        if ((has_sep)); then exec "$py" "${job_args[@]}" dry_run=true; fi
        exec "$py" "${job_args[@]}" -- dry_run=true
    fi
    echo "evaluate_run.sh: $run_dir is not visible here: no local dry run" >&2
    exit 0
fi
((slurm)) && mkdir -p "$REPO_ROOT/runs"
exec "${cmd[@]}"
