#!/usr/bin/env bash
# The fixed-exposure sweep: one job per (alpha, seed), named <model>-fixed-a<alpha>-s<seed>.
#
#   ATESD_OUTPUTS=/shared/atesd launch/sweep.sh [--dry-run] [--max-parallel N | --slurm] MODEL [overrides...]
#       MODEL: qwen3-1.7b | qwen3-4b | qwen3-8b (preset MODEL-fixed-sweep)
#       ATESD_ALPHAS (default "0 0.25 0.5 0.75 1"), ATESD_SEEDS (default "0 1 2")
#
# Ray (RAY_ADDRESS): a Ray job does not queue for GPUs (verl raises when the cluster lacks them), so the
# sweep keeps at most N jobs (--max-parallel, default 1) submitted and unfinished, and submits the next
# one when a job ends (launch/ray_job.sh state, every ATESD_JOB_POLL_S seconds, default 30). N jobs must
# fit the cluster at once: N x trainer.nnodes x trainer.n_gpus_per_node <= its GPUs. The sweep runs until
# its last job ends (run it under tmux or nohup), prints each job's end state, and exits 0 only if every
# job SUCCEEDED (1 otherwise; 4 when Ray's answers became unreadable, see ATESD_JOB_STATUS_TRIES).
# Each job is `launch/submit.sh --no-wait --submission-id NAME-<sweep start> MODEL-fixed-sweep
# controller.alpha=A preset.seed=S trainer.experiment_name=NAME [overrides]`.
# --slurm: one `launch/slurm/sbatch.sh` allocation per job, all handed to Slurm at once (Slurm queues
# them). --dry-run passes --dry-run to every job: each job's command, resolved config and resource plan;
# nothing is submitted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() {
    echo "sweep.sh: $*" >&2
    exit 2
}
usage="usage: sweep.sh [--dry-run] [--max-parallel N | --slurm] MODEL [hydra overrides...]"
flags=()
slurm=0
max_parallel=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) flags+=(--dry-run); shift ;;
        --slurm) slurm=1; shift ;;
        --max-parallel) [[ $# -ge 2 ]] || die "--max-parallel needs a value"; max_parallel="$2"; shift 2 ;;
        -*) die "unknown option $1; $usage" ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || die "$usage"
if ((slurm)) && [[ -n "$max_parallel" ]]; then
    die "--max-parallel is for Ray submissions; with --slurm each job is its own allocation and Slurm queues them"
fi
max_parallel="${max_parallel:-1}"
[[ "$max_parallel" =~ ^[1-9][0-9]*$ ]] || die "--max-parallel must be a positive integer, got '$max_parallel'"
poll_s="${ATESD_JOB_POLL_S:-30}"
tries="${ATESD_JOB_STATUS_TRIES:-10}"
model="$1"
shift
read -r -a alphas <<<"${ATESD_ALPHAS:-0 0.25 0.5 0.75 1}"
read -r -a seeds <<<"${ATESD_SEEDS:-0 1 2}"
stamp="$(date +%Y%m%d-%H%M%S)"

running=()  # Ray submission ids submitted and not yet seen ended
ended=()    # "STATE ID" of every job seen ended
unreadable=0
reap() {  # one `ray_job.sh state` per running job; the ended ones move from running to ended
    local id state still=()
    for id in "${running[@]}"; do
        if state="$("$here/ray_job.sh" state "$id")"; then
            unreadable=0
            case "$state" in
                SUCCEEDED | FAILED | STOPPED)
                    echo "sweep.sh: $id ended: $state"
                    ended+=("$state $id")
                    continue
                    ;;
            esac
        else
            unreadable=$((unreadable + 1))
            if ((unreadable >= tries)); then
                echo "sweep.sh: gave up after $tries unreadable answers of Ray in a row; still running: ${running[*]}" >&2
                exit 4
            fi
        fi
        still+=("$id")
    done
    running=("${still[@]}")
}
wait_below() {  # wait_below N: until fewer than N submitted jobs are unfinished
    reap
    while ((${#running[@]} >= $1)); do
        sleep "$poll_s"
        reap
    done
}

for alpha in "${alphas[@]}"; do
    for seed in "${seeds[@]}"; do
        name="$model-fixed-a$alpha-s$seed"
        overrides=("controller.alpha=$alpha" "preset.seed=$seed" "trainer.experiment_name=$name" "$@")
        echo "== $name"
        if ((slurm)); then
            "${ATESD_SBATCH:-$here/slurm/sbatch.sh}" "${flags[@]}" "$model-fixed-sweep" "${overrides[@]}"
            continue
        fi
        ((${#flags[@]})) || wait_below "$max_parallel"
        id="$name-$stamp"
        rc=0
        "${ATESD_SUBMIT:-$here/submit.sh}" "${flags[@]}" --no-wait --submission-id "$id" "$model-fixed-sweep" \
            "${overrides[@]}" || rc=$?
        if ((rc)); then
            echo "sweep.sh: submitting $name failed (exit $rc); still running on Ray: ${running[*]:-none}" >&2
            exit "$rc"
        fi
        ((${#flags[@]})) || running+=("$id")
    done
done
((slurm || ${#flags[@]})) && exit 0

wait_below 1
n_ok=0
for line in "${ended[@]}"; do
    echo "sweep.sh: $line"
    if [[ "$line" == SUCCEEDED\ * ]]; then n_ok=$((n_ok + 1)); fi
done
echo "sweep.sh: $n_ok of ${#ended[@]} jobs SUCCEEDED"
((n_ok == ${#ended[@]}))
