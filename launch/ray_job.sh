#!/usr/bin/env bash
# The state of one Ray job, and waiting until it ends, from `ray job status` (docs/launching.md).
#
#   launch/ray_job.sh state SUBMISSION_ID   # print PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED
#   launch/ray_job.sh wait SUBMISSION_ID    # poll until the job ends; exit with its outcome
#
# Why: `ray job submit` without --no-wait follows the job's log stream and exits 0 when that stream
# drops or the job was STOPPED, so a caller that needs the outcome submits with --no-wait and waits here.
# state: exit 0 with the state printed, or 4 (nothing printed) when Ray's answer has no state in it
# (dashboard unreachable, unknown id). wait: prints each change of state; exit 0 SUCCEEDED, 1 FAILED,
# 3 STOPPED, 4 after ATESD_JOB_STATUS_TRIES unreadable answers in a row (default 10).
# Environment: RAY_ADDRESS (required), ATESD_JOB_POLL_S (seconds between polls, default 30).
set -euo pipefail

die() {
    echo "ray_job.sh: $*" >&2
    exit 2
}

# job_state ID: the state named in one `ray job status` answer. Ray 2.60's CLI
# (ray/dashboard/modules/job/cli.py, _log_job_status) prints "Status for job 'ID': PENDING|RUNNING"
# while it runs and "Job 'ID' succeeded" / "Job 'ID' failed" / "Job 'ID' was stopped" once it ended,
# possibly in ANSI colours.
job_state() {
    local id="$1" out line
    out="$(ray job status --address "$RAY_ADDRESS" "$id" 2>&1 | sed 's/\x1b\[[0-9;]*m//g')" || true
    while IFS= read -r line; do
        case "$line" in
            *"Job '$id' succeeded"*) echo SUCCEEDED; return 0 ;;
            *"Job '$id' failed"*) echo FAILED; return 0 ;;
            *"Job '$id' was stopped"*) echo STOPPED; return 0 ;;
            *"Status for job '$id': PENDING"*) echo PENDING; return 0 ;;
            *"Status for job '$id': RUNNING"*) echo RUNNING; return 0 ;;
        esac
    done <<<"$out"
    echo "ray_job.sh: no state for job '$id' in the answer of 'ray job status': ${out:-<empty>}" >&2
    return 4
}

# wait_job ID: poll job_state until the job ends; the exit status encodes its outcome (header).
wait_job() {
    local id="$1" state last="" unreadable=0
    while true; do
        if state="$(job_state "$id")"; then
            unreadable=0
            if [[ "$state" != "$last" ]]; then
                echo "ray_job.sh: job '$id' is $state ($(date '+%F %T'))"
                last="$state"
            fi
            case "$state" in
                SUCCEEDED) return 0 ;;
                FAILED) return 1 ;;
                STOPPED) return 3 ;;
            esac
        else
            unreadable=$((unreadable + 1))
            if ((unreadable >= tries)); then
                echo "ray_job.sh: gave up on job '$id': $tries unreadable answers in a row" >&2
                return 4
            fi
        fi
        sleep "$poll_s"
    done
}

[[ $# -eq 2 ]] || die "usage: ray_job.sh {state | wait} SUBMISSION_ID"
[[ -n "${RAY_ADDRESS:-}" ]] || die "RAY_ADDRESS is not set (e.g. http://HEAD_IP:8265)"
poll_s="${ATESD_JOB_POLL_S:-30}"
tries="${ATESD_JOB_STATUS_TRIES:-10}"
[[ "$poll_s" =~ ^[0-9]+$ ]] || die "ATESD_JOB_POLL_S must be a whole number of seconds, got '$poll_s'"
[[ "$tries" =~ ^[1-9][0-9]*$ ]] || die "ATESD_JOB_STATUS_TRIES must be a positive integer, got '$tries'"
case "$1" in
    state) job_state "$2" ;;
    wait) wait_job "$2" ;;
    *) die "unknown command '$1'; usage: ray_job.sh {state | wait} SUBMISSION_ID" ;;
esac
