"""launch/evaluate_run.sh and launch/slurm/evaluate_run.sbatch with fake `ray` / `sbatch` (tests/test_launch.py's)."""

import subprocess

import pytest
import test_launch
from conftest import REPO_ROOT
from test_launch import calls, shellcheck_binary

fake_bin = test_launch.fake_bin  # the fixture: fake ray/sbatch/srun on PATH, their calls logged
SCRIPTS = ["launch/evaluate_run.sh", "launch/slurm/evaluate_run.sbatch"]


def launch(env, *args, **extra):
    return subprocess.run(
        ["launch/evaluate_run.sh", *args],
        cwd=REPO_ROOT,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_scripts_pass_shellcheck():
    run = subprocess.run([shellcheck_binary(), *SCRIPTS], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_ray_job_gets_the_run_the_output_root_and_the_gpus(fake_bin):
    run = launch(
        fake_bin, "--no-wait", "--gpus", "4", "qwen3-1.7b-atesd-s1", "--steps", "50,100", "--", "n_samples=4",
        RAY_ADDRESS="http://head:8265", ATESD_OUTPUTS="/shared/atesd/",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    [submit] = calls(fake_bin)
    assert submit[:3] == ["ray", "job", "submit"]
    assert submit[submit.index("--address") + 1] == "http://head:8265"
    assert submit[submit.index("--runtime-env") + 1] == "launch/runtime_env.yaml"
    assert submit[submit.index("--entrypoint-num-gpus") + 1] == "4" and "--no-wait" in submit
    assert submit[submit.index("--submission-id") + 1].startswith("eval-qwen3-1.7b-atesd-s1-")
    assert submit[submit.index("--") + 1 :] == [
        "python3", "-m", "recipe.atesd.evaluate_run", "/shared/atesd/checkpoints/qwen3-1.7b-atesd-s1",
        "--out", "/shared/atesd/eval", "--steps", "50,100", "--", "n_samples=4",
    ]  # fmt: skip


def test_slurm_job_runs_evaluate_run_on_one_node(fake_bin, tmp_path):
    run = launch(
        fake_bin, "--slurm", "--gpus", "2", "r-s0", ATESD_OUTPUTS="/shared/atesd", ATESD_PARTITION="gpu"
    )
    assert run.returncode == 0, run.stderr
    [sbatch] = calls(fake_bin)
    assert "--nodes=1" in sbatch and "--gpus-per-node=2" in sbatch and "--partition=gpu" in sbatch
    script = sbatch.index(str(REPO_ROOT / "launch/slurm/evaluate_run.sbatch"))
    assert sbatch[script + 1 :] == ["/shared/atesd/checkpoints/r-s0", "--out", "/shared/atesd/eval"]
    # the batch script itself: runs evaluate_run with those arguments from the repository
    (tmp_path / "python3").write_text('#!/usr/bin/env bash\necho "python3 $*" > "$FAKE_LOG.job"\n')
    (tmp_path / "python3").chmod(0o755)
    env = {**fake_bin, "PATH": f"{tmp_path}:{fake_bin['PATH']}", "SLURM_SUBMIT_DIR": str(REPO_ROOT)}
    job = subprocess.run(
        ["bash", str(REPO_ROOT / "launch/slurm/evaluate_run.sbatch"), *sbatch[script + 1 :]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr
    with open(fake_bin["FAKE_LOG"] + ".job") as f:
        assert f.read().split() == ["python3", "-m", "recipe.atesd.evaluate_run", *sbatch[script + 1 :]]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["r-s0"], {}, "ATESD_OUTPUTS='' must be an absolute path"),
        (["r-s0"], {"ATESD_OUTPUTS": "rel/path"}, "ATESD_OUTPUTS='rel/path' must be an absolute path"),
        (["r-s0"], {"ATESD_OUTPUTS": "/s"}, "RAY_ADDRESS is not set"),
        (["r-s0", "--out", "/x"], {"ATESD_OUTPUTS": "/s"}, "do not pass --out"),
        (["--gpus", "0", "r-s0"], {"ATESD_OUTPUTS": "/s"}, "--gpus must be a positive integer"),
        ([], {"ATESD_OUTPUTS": "/s"}, "usage: evaluate_run.sh"),
    ],
)
def test_bad_settings_fail_naming_them(fake_bin, args, env, message):
    run = launch(fake_bin, *args, **env)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert calls(fake_bin) == []
