#!/usr/bin/env bash
# Submit one preset to a Ray cluster with `ray job submit` (docs/launching.md).
#
#   launch/submit.sh [--dry-run] [--no-wait] [--job-name NAME] PRESET [hydra overrides...]
#
# PRESET is a file stem of recipe/atesd/config/experiment/ (not a `_` layer). The job runs
#   python -m <entry point> +experiment=PRESET platform=gpu [overrides...]
# in the repository (Ray working_dir, launch/runtime_env.yaml) on the cluster at $RAY_ADDRESS.
# --dry-run prints that command, then runs the entry point's dry run here (resolved config + resource
# plan; no Ray, no GPU). --no-wait returns once submitted instead of following the job's logs.
# Environment: RAY_ADDRESS (required unless --dry-run), ATESD_JOB_PYTHON (python on the cluster,
# default python3), ATESD_PYTHON (python for the local dry run, default .venv/bin/python or python3).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PRESET_DIR="$REPO_ROOT/recipe/atesd/config/experiment"

die() {
    echo "submit.sh: $*" >&2
    exit 2
}

known_presets() {
    local f name
    for f in "$PRESET_DIR"/*.yaml; do
        name="$(basename "$f" .yaml)"
        [[ "$name" == _* ]] || printf '%s\n' "$name"
    done
}

dry_run=0
no_wait=0
job_name=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --no-wait) no_wait=1; shift ;;
        --job-name) [[ $# -ge 2 ]] || die "--job-name needs a value"; job_name="$2"; shift 2 ;;
        -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || die "no preset given; known presets: $(known_presets | tr '\n' ' ')"
preset="$1"
shift
if [[ "$preset" == _* || ! -f "$PRESET_DIR/$preset.yaml" ]]; then
    die "unknown preset '$preset'; known presets: $(known_presets | tr '\n' ' ')"
fi

if [[ "$preset" == *-grpo ]]; then
    entry="recipe.atesd.main_grpo"
else
    entry="recipe.atesd.main_atesd"
fi
job_name="${job_name:-$preset}"
job_cmd=("${ATESD_JOB_PYTHON:-python3}" -m "$entry" "+experiment=$preset" platform=gpu "$@")
submit_cmd=(ray job submit --address "${RAY_ADDRESS:-<RAY_ADDRESS>}"
    --runtime-env launch/runtime_env.yaml
    --submission-id "$job_name-$(date +%Y%m%d-%H%M%S)")
((no_wait)) && submit_cmd+=(--no-wait)
submit_cmd+=(-- "${job_cmd[@]}")

cd "$REPO_ROOT"
if ((dry_run)); then
    printf 'cd %q &&' "$REPO_ROOT"
    printf ' %q' "${submit_cmd[@]}"
    printf '\n'
    py="${ATESD_PYTHON:-}"
    if [[ -z "$py" ]]; then
        if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then py="$REPO_ROOT/.venv/bin/python"; else py=python3; fi
    fi
    if [[ "$entry" == recipe.atesd.main_grpo ]]; then
        # main_grpo has no dry_run key: the same composition and checks through launch/presets.py.
        exec "$py" -m launch.presets dry-run "$preset" "$@"
    fi
    exec "$py" -m "$entry" "+experiment=$preset" platform=gpu "$@" dry_run=true
fi
[[ -n "${RAY_ADDRESS:-}" ]] || die "RAY_ADDRESS is not set (e.g. http://HEAD_IP:8265); use --dry-run to check locally"
exec "${submit_cmd[@]}"
