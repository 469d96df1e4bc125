"""Paired rollouts end to end on CPU (docs/cpu.md, "Paired rollouts"; recipe/atesd/glue/seeded_rollout.py).

Three stacks of ``recipe.atesd.main_atesd +world=toy`` (the shipped toy model, 16 prompts per step, sampled at
temperature 1.1 / top-p 0.95 / top-k 20), one step each, no validation, no checkpoint:

- ``a``: fixed α = 0.25, ``actor_rollout_ref.rollout.seed=1``;
- ``b``: fixed α = 1.0, the same seed — another arm of the same seed;
- ``c``: fixed α = 0.25, ``actor_rollout_ref.rollout.seed=2``.

Every rollout request's prompt and response token ids are recorded in the agent-loop worker
(tests/rollout_capture.py). Step 1 samples from the initial weights, before any update, so the arms of one seed
must get the same responses token for token — the exposure α enters only the teacher's context, after the
rollout — and another seed other responses. Without the seeded agent loop (verl's ``single_turn_agent``),
requests sample from vLLM's engine-wide RNG in whatever order they reach the engine, and the arms of one seed
differed (docs/cpu.md gives the counts). Pairing ends with step 1: the arms' updates differ, so do the weights.
"""

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.integration

TRAIN_ROWS = 16  # data.train_batch_size of +world=toy (recipe/atesd/config/world/toy.yaml), rollout.n = 1
ARMS = {"a": (0.25, 1), "b": (1.0, 1), "c": (0.25, 2)}  # name -> (fixed α, rollout seed)
ONE_STEP = [
    "+world=toy",
    "controller.exposure_mode=fixed",
    "trainer.total_training_steps=1",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
]
RUN_TIMEOUT_S = 900  # tests/test_atesd_cpu_e2e.py's launch


def read_rollouts(folder: Path) -> dict[tuple[int, int, int], dict]:
    """(step, dataset index, sample number) → the request's record (tests/rollout_capture.py); keys unique."""
    records = [
        json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()
    ]
    keyed = {(r["step"], r["index"], r["session"]): r for r in records}
    assert len(keyed) == len(records), f"{folder}: two requests share (step, index, session)"
    return keyed


def run_arm(workdir: Path, name: str, alpha: float, seed: int, extra: tuple[str, ...] = ()):
    """One stack: one step of fixed α ``alpha`` at rollout seed ``seed``; returns (step-1 rollouts, step-1
    metrics). ``extra``: more hydra overrides (the manual without-the-fix check passes verl's agent loop)."""
    from test_atesd_cpu_e2e import launch, metrics_rows

    from recipe.atesd.toy.build_data import build
    from recipe.atesd.toy.shipped import INSTALLED, install

    model = install(INSTALLED)  # as `make toy` does: the shipped model, verified
    data = workdir / "data"
    if not (data / "train.parquet").exists():
        build(data, seed=0)
    capture = workdir / f"{name}-rollouts"
    overrides = [
        *ONE_STEP,
        f"controller.alpha={alpha}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data}/train.parquet",
        f"data.val_files={data}/val.parquet",
        f"probe.path={data}/probe.parquet",
        *extra,
    ]
    env = {
        "ATESD_ROLLOUT_CAPTURE_DIR": str(capture),
        "VERL_USE_EXTERNAL_MODULES": "rollout_capture",
        "PYTHONPATH": str(REPO_ROOT / "tests"),
    }
    result, _ = launch(workdir / name, name, overrides, env=env)
    assert result.returncode == 0 and not result.timed_out, result.describe()
    print(f"arm {name} (alpha {alpha}, seed {seed}): stack {result.wall_s:.0f}s")
    return read_rollouts(capture), metrics_rows(workdir / name / f"{name}.jsonl")[1]


def check_step1(rollouts: dict, metrics: dict, alpha: float) -> dict[tuple[int, int], dict]:
    """The arm ran its α and sampled TRAIN_ROWS step-1 requests, each with a seed of its own; returns them
    keyed by (index, session)."""
    assert metrics["exposure/alpha"] == alpha
    step1 = {(i, s): r for (step, i, s), r in rollouts.items() if step == 1}
    assert len(step1) == TRAIN_ROWS, sorted(step1)
    assert all(r["temperature"] > 0 for r in step1.values())
    return step1


def compare(x: dict, y: dict) -> tuple[int, int]:
    """(requests with the same response ids, requests with the same seed) over the same prompts."""
    assert sorted(x) == sorted(y), "the arms rolled out other prompts at step 1"
    assert all(x[k]["prompt_ids"] == y[k]["prompt_ids"] for k in x)
    same_response = sum(x[k]["response_ids"] == y[k]["response_ids"] for k in x)
    same_seed = sum(x[k]["seed"] == y[k]["seed"] for k in x)
    return same_response, same_seed


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pairing")
    return {name: (run_arm(workdir, name, alpha, seed), alpha) for name, (alpha, seed) in ARMS.items()}


@pytest.mark.timeout(len(ARMS) * RUN_TIMEOUT_S + 300)
def test_arms_of_one_seed_share_step1_rollouts_and_another_seed_does_not(arms):
    step1 = {
        name: check_step1(rollouts, metrics, alpha) for name, ((rollouts, metrics), alpha) in arms.items()
    }
    for requests in step1.values():  # every request has its own seed: none unseeded, none shared
        seeds = [r["seed"] for r in requests.values()]
        assert all(isinstance(s, int) for s in seeds) and len(set(seeds)) == TRAIN_ROWS, seeds
    same_ab, seeds_ab = compare(step1["a"], step1["b"])
    same_ac, seeds_ac = compare(step1["a"], step1["c"])
    print(
        f"step-1 responses identical: a/b (one seed) {same_ab}/{TRAIN_ROWS}, a/c (two seeds) {same_ac}/{TRAIN_ROWS}"
    )
    assert seeds_ab == TRAIN_ROWS and same_ab == TRAIN_ROWS
    assert seeds_ac == 0 and same_ac < TRAIN_ROWS
    # the responses are samples, not one greedy answer: a/c differ on several prompts (seen: see docs/cpu.md)
    assert TRAIN_ROWS - same_ac >= 2
