#!/usr/bin/env bash
# Submit one preset to a Ray cluster with `ray job submit` (docs/launching.md).
#
#   ATESD_OUTPUTS=/shared/atesd launch/submit.sh [--dry-run] [--no-wait] [--submission-id ID] PRESET [overrides...]
#
# PRESET is a file stem of recipe/atesd/config/experiment/ (not a `_` layer). The job runs
#   python -m <entry point> +experiment=PRESET platform=gpu preset.outputs=$ATESD_OUTPUTS [overrides...]
# in a temporary copy of the repository (Ray working_dir, launch/runtime_env.yaml) on the cluster at
# $RAY_ADDRESS. Everything the run keeps goes under ATESD_OUTPUTS, an absolute path on storage that
# outlives the job (required to submit: Ray's copy is temporary): checkpoints in checkpoints/<experiment>,
# metrics in metrics/<project>/<experiment>.jsonl (VERL_FILE_LOGGER_ROOT in the job's runtime env).
# --dry-run prints the command, then runs the entry point's dry run here (resolved config + resource
# plan; no Ray, no GPU). --no-wait returns once submitted instead of following the job's logs (the
# outcome: launch/ray_job.sh wait ID). --submission-id: the Ray job id (default PRESET-<date>-<time>).
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
submission_id=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --no-wait) no_wait=1; shift ;;
        --submission-id) [[ $# -ge 2 ]] || die "--submission-id needs a value"; submission_id="$2"; shift 2 ;;
        -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
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

# The output root: every run keeps its checkpoints and metrics there, never in Ray's working copy.
experiment="<trainer.experiment_name>"
project=atesd
ckpt_dir=""
for arg in "$@"; do
    case "$arg" in
        preset.outputs=*) die "do not override preset.outputs: set ATESD_OUTPUTS=/shared/path (the metrics follow it too)" ;;
        trainer.experiment_name=*) experiment="${arg#*=}" ;;
        trainer.project_name=*) project="${arg#*=}" ;;
        trainer.default_local_dir=*)
            ckpt_dir="${arg#*=}"
            [[ "$ckpt_dir" == /* ]] || die "trainer.default_local_dir=$ckpt_dir is relative: it would land in Ray's temporary working copy; give an absolute path"
            ;;
    esac
done
outputs="${ATESD_OUTPUTS:-}"
if [[ -n "$outputs" ]]; then
    [[ "$outputs" == /* ]] || die "ATESD_OUTPUTS=$outputs must be an absolute path (a relative one lands in Ray's temporary working copy)"
    [[ "$outputs" != *$'\n'* ]] || die "ATESD_OUTPUTS must be a single line"
    outputs="${outputs%/}"
elif ((!dry_run)); then
    die "ATESD_OUTPUTS is not set: give an absolute path on storage that outlives the job (e.g. ATESD_OUTPUTS=/shared/atesd); Ray's working copy of the repository is temporary"
fi
if ((!dry_run)); then
    [[ -n "${RAY_ADDRESS:-}" ]] || die "RAY_ADDRESS is not set (e.g. http://HEAD_IP:8265); use --dry-run to check locally"
fi
root="${outputs:-<ATESD_OUTPUTS>}"

if [[ "$preset" == *-grpo ]]; then
    entry="recipe.atesd.main_grpo"
else
    entry="recipe.atesd.main_atesd"
fi
submission_id="${submission_id:-$preset-$(date +%Y%m%d-%H%M%S)}"
job_cmd=("${ATESD_JOB_PYTHON:-python3}" -m "$entry" "+experiment=$preset" platform=gpu "preset.outputs=$root" "$@")

cd "$REPO_ROOT"
# The job's runtime env: launch/runtime_env.yaml plus VERL_FILE_LOGGER_ROOT under its env_vars (the last
# block of that file), so the file logger of every process of the job writes below the output root.
runtime_env=launch/runtime_env.yaml
if ((!dry_run)); then
    runtime_env="$(mktemp "${TMPDIR:-/tmp}/atesd-runtime-env.XXXXXX")"
    trap 'rm -f "$runtime_env"' EXIT
    cat launch/runtime_env.yaml >"$runtime_env"
    printf "  VERL_FILE_LOGGER_ROOT: '%s'\n" "${outputs//\'/\'\'}/metrics" >>"$runtime_env"
fi
submit_cmd=(ray job submit --address "${RAY_ADDRESS:-<RAY_ADDRESS>}" --runtime-env "$runtime_env"
    --submission-id "$submission_id")
((no_wait)) && submit_cmd+=(--no-wait)
submit_cmd+=(-- "${job_cmd[@]}")

{
    echo "submit.sh: job $submission_id keeps its outputs under $root (ATESD_OUTPUTS):"
    echo "submit.sh:   checkpoints  ${ckpt_dir:-$root/checkpoints/$experiment}"
    echo "submit.sh:   metrics      $root/metrics/$project/$experiment.jsonl (VERL_FILE_LOGGER_ROOT=$root/metrics)"
    echo "submit.sh:   job log      ray job logs --address ${RAY_ADDRESS:-<RAY_ADDRESS>} $submission_id (kept by Ray, not under $root)"
} >&2
[[ -n "$outputs" ]] || echo "submit.sh: ATESD_OUTPUTS is not set: fine for --dry-run, but submitting refuses without it" >&2

if ((dry_run)); then
    printf 'cd %q &&' "$REPO_ROOT"
    printf ' %q' "${submit_cmd[@]}"
    printf '\n'
    echo "# runtime env: launch/runtime_env.yaml + env_vars.VERL_FILE_LOGGER_ROOT=$root/metrics"
    py="${ATESD_PYTHON:-}"
    if [[ -z "$py" ]]; then
        if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then py="$REPO_ROOT/.venv/bin/python"; else py=python3; fi
    fi
    overrides=("$@")
    [[ -n "$outputs" ]] && overrides=("preset.outputs=$outputs" "$@")
    if [[ "$entry" == recipe.atesd.main_grpo ]]; then
        # main_grpo has no dry_run key: the same composition and checks through launch/presets.py.
        exec "$py" -m launch.presets dry-run "$preset" "${overrides[@]}"
    fi
    exec "$py" -m "$entry" "+experiment=$preset" platform=gpu "${overrides[@]}" dry_run=true
fi
"${submit_cmd[@]}"
