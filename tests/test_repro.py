"""The toy reproduction sweep's driver and report (recipe/atesd/tools/repro_sweep.py, repro_report.py), on
synthetic run directories: metrics histories in the trainer's format (a boundary record, the step-0
validation record, training records with ``exposure/*``, ``distill/*``, ``timing_s/*``, the last one carrying
the final validation, as outputs of ``make demo`` look), verl's validation dumps and the sweep's own
run.json / done.json. No stack is started. Expected numbers are computed here from the inputs written.
"""

import json
import math
import re
import statistics
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread

from recipe.atesd.tools import repro_archive as ra
from recipe.atesd.tools import repro_claims as rc
from recipe.atesd.tools import repro_plots as rp
from recipe.atesd.tools import repro_report as rr
from recipe.atesd.tools import repro_rows as rw
from recipe.atesd.tools import repro_sweep as rs
from recipe.atesd.tools import sweep_plans as sp

KEY = "val-core/toy_sum/acc/mean@1"
MODEL = rs.REPO_ROOT / "artifacts" / "toy-qwen3"  # a path only: the sweep's default --model
PROBLEMS = {f"add {' '.join(['1'] * k)} mod 10": k for k in (2, 3)}  # two problems of each difficulty below
PROBLEMS.update({f"add {' '.join(['2'] * k)} mod 10": k for k in (2, 3)})
OCCUPANCY = (0.5, 0.25, 0.25)  # per bucket, every step of a synthetic per-difficulty run


def bucket_alphas(window):
    """α per bucket of a synthetic per-difficulty run's hold window: easy (bucket 0) high, hard low."""
    return [0.9 - 0.3 * k - 0.05 * window for k in range(len(OCCUPANCY))]


def val_file(tmp_path):
    path = tmp_path / "val.parquet"
    rows = [{"problem": p, "difficulty": k, "answer": "0"} for p, k in PROBLEMS.items()]
    pd.DataFrame({"data_source": ["toy_sum"] * len(rows), "extra_info": rows}).to_parquet(path)
    return path


def dump(path, scores):
    """verl's validation dump: one entry per held-out problem (input = the decoded chat prompt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "input": f"user\n{p}\nassistant\n<think>\n\n</think>\n\n",
                "output": "x",
                "gts": "0",
                "score": s,
                "step": 0,
            }
        )
        for p, s in zip(PROBLEMS, scores, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def make_run(
    root,
    method,
    seed,
    steps=4,
    kl=None,
    acc=(0.5, 0.75),
    done=True,
    wall=100.0,
    scores=((1, 0, 1, 0), (1, 1, 1, 0)),
    hold=2,
    test_freq=None,
    model=None,
    model_path=MODEL,
    plan=sp.REPRO,
    beta=None,
    times=("", ""),
):
    """A run directory as the sweep leaves it of an arm of ``plan`` (``model``: the hash its run.json records;
    ``beta(window) -> (a, b)``: an adaptive arm's Beta policy; ``times``: done.json's start and end); returns its
    path."""
    d = rs.run_dir(root, method, seed)
    d.mkdir(parents=True)
    m = plan.methods[method]
    per_bucket = rw.mode(method, plan.methods) == rw.PER_BUCKET_MODE
    kl = kl or tuple(0.5 - 0.001 * s for s in range(steps))
    run_overrides = rs.overrides(method, seed, steps, test_freq or steps, d, "toy", [], model_path, plan)
    cmd = rs.command(method, run_overrides, python="py", plan=plan)
    beta = beta or (lambda window: (1.0 + window, 2.0))
    record = {"path": str(model_path), "sha256": model, "source": "manifest"} if model else None
    meta = {"method": method, "seed": seed, "steps": steps, "command": cmd, "model": record}
    (d / rs.RUN).write_text(json.dumps(meta))
    records = [
        {
            "step": 0,
            "data": {},
            "attempt": {"number": 1, "resumed_from_step": 0, "dropped_steps": [], "started": ""},
        },
        {"step": 0, "data": {KEY: acc[0], "val-aux/toy_sum/reward/mean@1": acc[0]}},
    ]
    # acc: (step 0, last step), or one accuracy per evaluation at steps 0, test_freq, 2·test_freq, ...
    evals = dict(zip(range(0, steps + 1, test_freq or steps), acc, strict=True)) if len(acc) > 2 else {}
    for s in range(1, steps + 1):
        data = {
            "training/global_step": s,
            "timing_s/step": 10.0 if s == 1 else 1.0,
            "critic/score/mean": 0.5,
            "actor/grad_norm": 0.1 * s,  # logged, read by no report: left out of the archive
        }
        if m.mode != "grpo":
            window = (s - 1) // hold
            data |= {
                "exposure/alpha": m.alpha if m.mode == "fixed" else 0.1 * (window + 1),
                "exposure/window": float(window),
                "exposure/beta_a": beta(window)[0] if m.mode == "adaptive" else float("nan"),
                "exposure/beta_b": beta(window)[1] if m.mode == "adaptive" else float("nan"),
                "distill/kl_mean": kl[s - 1],
                "distill/top1_disagreement": kl[s - 1] / 10,
                "probe/nll": 1.0 / s,
            }
            if m.mode == "adaptive" and s % 2 == 1 and s > 1:
                data["controller/reward"] = 0.01 * s
            if per_bucket:  # as the trainer logs K = 3 buckets (docs/metrics.md): no batch Beta, α = mean
                alphas = bucket_alphas(window)
                data |= {
                    "exposure/alpha": statistics.fmean(alphas),
                    "exposure/beta_a": math.nan,
                    "exposure/beta_b": math.nan,
                }
                for k, a in enumerate(alphas):
                    data[f"exposure/alpha_bucket_{k}"] = a
                    data[f"exposure/occupancy_bucket_{k}"] = OCCUPANCY[k]
                    if k < 2 or s % 2 == 0:  # bucket 2 had no row on odd steps: its accuracy is absent there
                        data[f"exposure/accuracy_bucket_{k}"] = 0.8 - 0.3 * k + 0.01 * s
                    if k < 2:  # bucket 2 never logs a KL here
                        data[f"distill/kl_mean_bucket_{k}"] = kl[s - 1] * (k + 1)
        if s in evals and s < steps:
            data |= {KEY: evals[s], "timing_s/testing": 3.0}
        if s == steps:
            data |= {KEY: acc[-1], "timing_s/testing": 3.0}
        records.append({"step": s, "data": data})
    # verl writes NaN as a bare token; json.dumps does the same, and read_history parses it back
    (d / rs.METRICS).write_text("\n".join(json.dumps(r) for r in records) + "\n")
    dump(d / rs.GENERATIONS / "0.jsonl", scores[0])
    dump(d / rs.GENERATIONS / f"{steps}.jsonl", scores[1])
    if done:
        (d / rs.CHECKPOINTS).mkdir()
        (d / rs.CHECKPOINTS / "latest_checkpointed_iteration.txt").write_text(str(steps))
        (d / rs.DONE).write_text(json.dumps({"wall_s": wall, "started": times[0], "finished": times[1]}))
    return d


# ---------------------------------------------------------------------------------------------- driver


def test_methods_and_groups():
    assert sp.select_methods(["all"]) == list(sp.METHODS)
    assert sp.select_methods(["grpo", "fixed", "fixed-1"]) == [*sp.GROUPS["fixed"], "grpo"]
    assert [sp.METHODS[m].alpha for m in sp.GROUPS["fixed"]] == list(sp.FIXED_ALPHAS)
    with pytest.raises(ValueError, match="unknown method 'fixed-0.3'"):
        sp.select_methods(["fixed-0.3"])


def test_overrides_same_data_order_and_budget_per_seed(tmp_path):
    """For one seed every method gets the same data/rollout seed and step budget; the mode keys differ."""
    runs = {m: rs.overrides(m, 7, 40, 10, tmp_path / m, "toy", ["x=1"], MODEL) for m in sp.METHODS}
    for m, o in runs.items():
        assert {
            "+world=toy",
            "data.seed=7",
            "actor_rollout_ref.rollout.seed=7",
            "trainer.total_training_steps=40",
            "trainer.save_freq=40",
            "trainer.test_freq=10",
            "trainer.resume_mode=disable",
        } <= set(o)
        assert o[-1] == "x=1"
        assert f"trainer.validation_data_dir={tmp_path / m / rs.GENERATIONS}" in o
        assert ("controller_seed=7" in o) == (m != "grpo")
    assert (
        "controller.exposure_mode=fixed" in runs["fixed-0.25"]
        and "controller.alpha=0.25" in runs["fixed-0.25"]
    )
    assert set(sp.CONTROLLER) <= set(runs["adaptive"]) and set(sp.CONTROLLER) <= set(runs["random"])
    assert not any(o.startswith("controller.") for o in runs["grpo"])
    assert rs.command("grpo", [], "py")[:3] == ["py", "-m", "recipe.atesd.main_grpo"]
    assert rs.command("adaptive", [], "py")[2] == "recipe.atesd.main_atesd"


def fake_runner(steps, rc=0, write=True):
    calls = []

    def run(cmd, directory, log):
        calls.append(cmd)
        log.write_text("ran\n")
        if write:
            (directory / rs.CHECKPOINTS).mkdir()
            (directory / rs.CHECKPOINTS / "latest_checkpointed_iteration.txt").write_text(str(steps))
            (directory / rs.METRICS).write_text(
                json.dumps({"step": 0, "data": {KEY: 0.5}})
                + "\n"
                + json.dumps({"step": steps, "data": {KEY: 0.6}})
            )
        return rc

    return run, calls


def test_run_one_skips_finished_restarts_incomplete(tmp_path):
    d = rs.run_dir(tmp_path, "adaptive", 0)
    cmd = rs.command("adaptive", rs.overrides("adaptive", 0, 3, 3, d, "toy", [], MODEL), "py")
    run, calls = fake_runner(3)
    assert rs.run_state(d, cmd) == "absent"
    assert rs.run_one("adaptive", 0, cmd, d, 3, runner=run)[0] == "done"
    done = json.loads((d / rs.DONE).read_text())
    assert json.loads((d / rs.RUN).read_text())["model"] is None  # run_one without a model records none
    assert done["wall_s"] >= 0 and json.loads((d / rs.RUN).read_text())["command"] == cmd
    assert rs.run_state(d, cmd) == "done"
    # rerun: skipped, the runner is not called again
    assert rs.run_one("adaptive", 0, cmd, d, 3, runner=run)[0] == "skipped" and len(calls) == 1
    # a finished run made with another budget is an error, not a reuse
    other = rs.command("adaptive", rs.overrides("adaptive", 0, 5, 5, d, "toy", [], MODEL), "py")
    with pytest.raises(ValueError, match="finished with another command"):
        rs.run_state(d, other)
    # the interpreter may differ between machines: not part of the comparison
    assert rs.run_state(d, ["other-python", *cmd[1:]]) == "done"
    # the model: the hash run_one recorded must be the sweep's, else an error naming both
    model = {"path": str(MODEL), "sha256": "a" * 64, "source": "manifest"}
    with pytest.raises(ValueError, match=r"another model: \(not recorded\), not a{64}"):
        rs.run_state(d, cmd, model)
    # an incomplete directory (no done.json) is moved aside and the run restarts from scratch
    (d / rs.DONE).unlink()
    assert rs.run_state(d, cmd) == "incomplete"
    outcome, detail = rs.run_one("adaptive", 0, cmd, d, 3, runner=run)
    assert outcome == "done" and "moved to" in detail and len(calls) == 2
    aside = [p.name for p in d.parent.iterdir() if p.name.startswith("seed0.incomplete-")]
    assert len(aside) == 1 and not (d.parent / aside[0] / rs.DONE).exists()


def test_report_refuses_runs_of_two_models(tmp_path):
    """Runs that recorded different model hashes (or one none) never share a table: the report stops before
    writing anything, naming both hashes; runs of one model report it."""
    root, out = tmp_path / "runs", tmp_path / "docs" / "r.md"
    make_run(root, "fixed-0", 0, model="a" * 64)
    make_run(root, "adaptive", 0, model="b" * 64)
    with pytest.raises(
        ValueError, match=f"used model {'b' * 64}.*used {'a' * 64}|used model {'a' * 64}.*used {'b' * 64}"
    ):
        rr.write(root, out, None)
    assert not out.exists() and not (out.with_suffix("") / "results.json").exists()
    make_run(root / "unrecorded", "fixed-0", 0)
    make_run(root / "unrecorded", "adaptive", 0, model="a" * 64)
    with pytest.raises(ValueError, match=r"\(not recorded\)"):
        rr.write(root / "unrecorded", out, None)
    make_run(root / "one", "fixed-0", 0, model="a" * 64)
    make_run(root / "one", "adaptive", 0, model="a" * 64)
    rows = rr.write(root / "one", out, None)
    assert {r["model_sha256"] for r in rows} == {"a" * 64} and f"Model: `{'a' * 64}`" in out.read_text()


@pytest.mark.parametrize("seed", [0, 3])
def test_a_sweep_arm_trains_the_config_of_its_run_alone(tmp_path, seed, toy_repo, monkeypatch):
    """The stack's arm of every ATESD method resolves to the config its command alone resolves to (the same
    config hash, recipe/atesd/glue/sweep.py::config_sha256: places and names aside), with its outputs where the
    run alone puts them; that the training then matches is tests/test_pairing_cpu_e2e.py."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from launch.presets import CONFIG_DIR
    from recipe.atesd.glue import sweep
    from recipe.atesd.glue.platform import configure_process_env, with_platform_override

    configure_process_env()
    monkeypatch.setenv("ATESD_REPO", str(toy_repo))
    methods = [m for m in sp.METHODS if sp.METHODS[m].mode != "grpo"]

    def resolved(args):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(config_name="atesd_trainer", overrides=with_platform_override(args, "cpu"))
        OmegaConf.resolve(cfg)
        return cfg

    stack = resolved(rs.stack_overrides(methods, seed, 40, 10, tmp_path, "toy", ["probe.size=4"], MODEL))
    arms = {a.name: a for a in sweep.prepare(stack)}
    assert list(arms) == methods
    for m in methods:
        d = rs.run_dir(tmp_path, m, seed)
        alone = resolved(rs.overrides(m, seed, 40, 10, d, "toy", ["probe.size=4"], MODEL))
        assert arms[m].sha256 == sweep.config_sha256(alone), m
        assert arms[m].directory == d
        assert arms[m].config.trainer.default_local_dir == alone.trainer.default_local_dir
        assert arms[m].config.trainer.validation_data_dir == alone.trainer.validation_data_dir
    with pytest.raises(ValueError, match="controller.alpha=0.5.*a key the methods set"):
        rs.stack_overrides(methods, seed, 40, 10, tmp_path, "toy", ["controller.alpha=0.5"], MODEL)


def test_hydra_literal_round_trips_through_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = {"fixed-0.25": {"controller": {"alpha": 0.25, "mode": "it's", "on": True, "n": 3}}}
    parsed = OverridesParser.create().parse_override(f"++sweep.arms={rs.hydra_literal(value)}").value()
    assert parsed == value


def test_run_stack_records_arms_and_names_failures(tmp_path):
    """A stand-in stack: arm 1 trained to the end (done.json by the trainer), arm 2 not; each arm's run.json names
    its command alone and the stack; the stack's log and record are kept; the overhead lines add up."""
    arms = [(m, ["py", m], rs.run_dir(tmp_path, m, 0)) for m in ("fixed-0.25", "adaptive")]
    steps = 3

    def stack(cmd, directory, log):
        assert directory is None  # the arms name their own metrics histories
        log.write_text("stack ran\n")
        first = arms[0][2]
        run, _ = fake_runner(steps)
        run(cmd, first, first / rs.LOG)
        (first / rs.DONE).write_text(
            json.dumps(
                {
                    "wall_s": 20.0,
                    "started": "2026-01-01T00:00:05+00:00",
                    "finished": "2026-01-01T00:00:25+00:00",
                }
            )
        )
        return 1

    outcomes, record = rs.run_stack(0, arms, ["py", "stack"], steps, tmp_path, runner=stack)
    assert [o for o, _ in outcomes] == ["done", "failed"]
    assert "no done.json (stack exit status 1)" in outcomes[1][1]
    meta = json.loads((arms[1][2] / rs.RUN).read_text())
    assert meta["command"] == ["py", "adaptive"] and meta["stack"] == ["py", "stack"]
    assert record["arms"] == ["fixed-0.25", "adaptive"] and record["exit_status"] == 1
    logs = list((tmp_path / rs.STACKS).glob("seed0-*.log"))
    assert len(logs) == 1 and logs[0].read_text() == "stack ran\n"
    assert json.loads(logs[0].with_suffix(".json").read_text()) == record
    # the overhead benchmark: the fake history holds no timing_s/step, so every second is outside the steps
    record = {
        **record,
        "wall_s": 40.0,
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:00:40+00:00",
    }
    lines = rs.overhead_lines(
        [(record, [d for _, _, d in arms])], [("fixed-0.25 seed 0", arms[0][2], 20.0, True)]
    )
    assert lines[0] == "[repro] fixed-0.25 seed 0: wall 20 s, steps 0 s, outside steps 1.00"
    assert "start-up 5 s, shutdown 15 s" in lines[1]
    assert lines[-1].startswith("[repro] overhead share: 1.00") and "of 40 s" in lines[-1]


def test_run_one_failures_write_no_done_marker(tmp_path):
    d = rs.run_dir(tmp_path, "grpo", 1)
    cmd = rs.command("grpo", [], "py")
    run, _ = fake_runner(3, rc=2)
    outcome, detail = rs.run_one("grpo", 1, cmd, d, 3, runner=run)
    assert outcome == "failed" and "exit status 2" in detail and not (d / rs.DONE).exists()
    # exit 0 but the checkpoint is not at the budget's last step: failed too
    d2 = rs.run_dir(tmp_path, "grpo", 2)
    outcome, detail = rs.run_one("grpo", 2, cmd, d2, 4, runner=fake_runner(3)[0])
    assert outcome == "failed" and "no checkpoint at step 4" in detail and not (d2 / rs.DONE).exists()
    # checkpoint but no validation at the last step (a kill between verl's save and its log)
    d3 = rs.run_dir(tmp_path, "grpo", 3)
    run3, _ = fake_runner(3)

    def no_val(cmd, directory, log):
        run3(cmd, directory, log)
        (directory / rs.METRICS).write_text(json.dumps({"step": 0, "data": {KEY: 0.5}}) + "\n")
        return 0

    outcome, detail = rs.run_one("grpo", 3, cmd, d3, 3, runner=no_val)
    assert outcome == "failed" and "no validation logged at step 3" in detail


def test_dry_run_lists_every_run(tmp_path, capsys):
    from recipe.atesd.data.manifest import model_record

    root, model = tmp_path.resolve() / "runs", tmp_path.resolve() / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    digest = model_record(model)["sha256"]
    # finished with the command the CLI builds, from the same model
    make_run(root, "fixed-0.5", 0, steps=40, test_freq=10, model=digest, model_path=model)
    args = ["--root", str(root), "--model", str(model), "--methods", "fixed-0.5"]
    rs.main([*args, "grpo", "--seeds", "0", "1", "--dry-run"])
    out = capsys.readouterr().out
    # each run's command alone (4) and, per seed, the sweep stack that trains its ATESD methods (2)
    assert f"model {digest}" in out and "4 runs" in out and out.count("+world=toy") == 6
    assert out.count(f"actor_rollout_ref.model.path={model}") == 6
    assert out.count("stack seed") == 2 and "sweep.subdir=seed1" in out
    assert (
        "fixed-0.5 seed 0: done" in out and "fixed-0.5 seed 1: absent" in out and "grpo seed 0: absent" in out
    )
    # the same sweep asked with another step budget: an error naming the run, not a silent reuse
    with pytest.raises(ValueError, match="another command"):
        rs.main([*args, "--seeds", "0", "--steps", "80", "--dry-run"])
    # the model changed since (another hash): an error naming both hashes
    (model / "config.json").write_text('{"changed": 1}')
    with pytest.raises(ValueError, match=f"another model: {digest}, not "):
        rs.main([*args, "--seeds", "0", "--dry-run"])
    # no model where --model points: refused before anything runs
    with pytest.raises(SystemExit):
        rs.main(["--root", str(root), "--model", str(tmp_path / "none"), "--dry-run"])


# ---------------------------------------------------------------------------------------------- rows


def test_run_row_adaptive(tmp_path):
    kl = (0.5, 0.4, 0.3, 0.2)
    d = make_run(tmp_path, "adaptive", 1, kl=kl, wall=100.0)
    row = rw.run_row("adaptive", 1, d, rw.load_difficulties(val_file(tmp_path)))
    assert (
        row["status"] == "done" and row["steps"] == 4 and row["mode"] == "adaptive" and row["alpha"] is None
    )
    assert (row["acc_before"], row["acc_after"]) == (0.5, 0.75)
    assert row["acc_curve"] == [[0, 0.5], [4, 0.75]]
    assert row["kl_step1"] == kl[0] and row["kl_mean_over_steps"] == pytest.approx(statistics.fmean(kl))
    assert row["top1_disagreement_step1"] == kl[0] / 10
    assert row["probe_nll_final"] == 1 / 4
    assert row["alpha_per_window"] == pytest.approx([0.1, 0.2])
    assert row["beta_mean_per_decision"] == pytest.approx(
        [1 / 3, 2 / 4]
    )  # a/(a+b) with a = 1 + window, b = 2
    assert row["controller_reward"] == [[3, 0.03]]
    assert row["rollout_step1"] == [None, 0.5]  # no response_length/mean logged, critic/score/mean 0.5
    # scores (1,0,1,0) then (1,1,1,0) over problems of difficulty 2, 3, 2, 3
    assert row["acc_by_difficulty_before"] == {"2": 1.0, "3": 0.0}
    assert row["acc_by_difficulty_after"] == {"2": 1.0, "3": 0.5}
    assert row["dump_vs_logged"] == []  # dumped means 0.5 and 0.75 = the logged accuracies
    bad = make_run(tmp_path, "adaptive", 2, acc=(0.5, 0.8))  # logged 0.8, dumped 0.75
    assert rw.run_row("adaptive", 2, bad, rw.load_difficulties(val_file(tmp_path)))["dump_vs_logged"] == [
        [4, 0.75, 0.8]
    ]
    # wall = outside + Σ timing_s/step + Σ timing_s/testing
    assert row["steps_s"] == 13.0 and row["first_step_s"] == 10.0 and row["testing_s"] == 3.0
    assert row["outside_steps_s"] == 100.0 - 13.0 - 3.0


def test_run_row_per_difficulty(tmp_path):
    """The per-difficulty arm's row: its own mode, α per bucket per hold window from the
    ``exposure/alpha_bucket_{k}`` keys, per-bucket means over the steps that logged them, no Beta mean (the
    trainer logs NaN for it with K > 1), per-level accuracies from the dumps as for every arm."""
    kl = (0.5, 0.4, 0.3, 0.2)
    d = make_run(tmp_path, "adaptive_per_difficulty", 0, kl=kl)
    row = rw.run_row("adaptive_per_difficulty", 0, d, rw.load_difficulties(val_file(tmp_path)))
    assert row["mode"] == "adaptive_per_difficulty" and row["alpha"] is None and row["status"] == "done"
    # 4 steps, hold 2: windows 0 and 1, α per bucket as written, exposure/alpha their mean
    assert row["alpha_per_bucket_per_window"] == [bucket_alphas(0), bucket_alphas(1)]
    assert row["alpha_per_window"] == pytest.approx([statistics.fmean(bucket_alphas(w)) for w in (0, 1)])
    assert row["beta_mean_per_decision"] == [] and row["beta_ab_per_decision"] == []
    assert row["occupancy_per_bucket"] == pytest.approx(list(OCCUPANCY))
    # bucket 0, 1: steps 1-4, mean of 0.01·s = 0.025; bucket 2: steps 2 and 4 only, mean 0.03
    assert row["train_accuracy_per_bucket"] == pytest.approx([0.8 + 0.025, 0.5 + 0.025, 0.2 + 0.03])
    assert row["kl_mean_per_bucket"][:2] == pytest.approx([statistics.fmean(kl), 2 * statistics.fmean(kl)])
    assert row["kl_mean_per_bucket"][2] is None  # never logged: null, not 0
    assert row["acc_by_difficulty_before"] == {"2": 1.0, "3": 0.0}
    assert row["acc_by_difficulty_after"] == {"2": 1.0, "3": 0.5}
    # the batch-level arms keep [] in the per-bucket fields
    batch = rw.run_row("adaptive", 0, make_run(tmp_path, "adaptive", 0), None)
    assert batch["mode"] == "adaptive" and batch["beta_mean_per_decision"]
    assert all(batch[f] == [] for f in ("alpha_per_bucket_per_window", *rw.BUCKET_MEANS))


def _rewrite(metrics, edit):
    """Apply ``edit(record)`` to every record of a metrics history (json round trip keeps NaN tokens)."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    metrics.write_text("\n".join(json.dumps(edit(r)) for r in records) + "\n")


def test_per_difficulty_missing_bucket_key_is_an_error_naming_it(tmp_path):
    d = make_run(tmp_path, "adaptive_per_difficulty", 0)
    metrics = d / rs.METRICS

    def drop_step3_bucket1(r):
        if r["step"] == 3:
            r["data"].pop("exposure/alpha_bucket_1")
        return r

    _rewrite(metrics, drop_step3_bucket1)
    with pytest.raises(ValueError, match=r"metrics.jsonl: step 3: missing 'exposure/alpha_bucket_1'"):
        rw.run_row("adaptive_per_difficulty", 0, d, None)
    _rewrite(metrics, lambda r: r | {"data": {k: v for k, v in r["data"].items() if "alpha_bucket" not in k}})
    with pytest.raises(ValueError, match=r"metrics.jsonl: no 'exposure/alpha_bucket_\{k\}' metric"):
        rw.run_row("adaptive_per_difficulty", 0, d, None)
    d2 = make_run(tmp_path, "adaptive_per_difficulty", 1)

    def nan_step2_bucket0(r):
        if r["step"] == 2:
            r["data"]["exposure/alpha_bucket_0"] = math.nan
        return r

    _rewrite(d2 / rs.METRICS, nan_step2_bucket0)
    with pytest.raises(ValueError, match=r"step 2: 'exposure/alpha_bucket_0' is nan, not a finite number"):
        rw.run_row("adaptive_per_difficulty", 1, d2, None)


def test_run_row_fixed_grpo_and_incomplete(tmp_path):
    fixed = rw.run_row("fixed-0.75", 0, make_run(tmp_path, "fixed-0.75", 0), None)
    assert (
        fixed["alpha"] == 0.75
        and fixed["beta_mean_per_decision"] == []
        and fixed["alpha_per_window"] == [0.75] * 2
    )
    assert fixed["acc_by_difficulty_after"] is None  # no held-out file given
    grpo = rw.run_row("grpo", 0, make_run(tmp_path, "grpo", 0), None)
    assert grpo["kl_step1"] is None and grpo["alpha_per_window"] == [] and grpo["steps"] == 4
    assert grpo["acc_after"] == 0.75
    part = rw.run_row("random", 0, make_run(tmp_path, "random", 0, done=False), None)
    assert part["status"] == "incomplete" and part["acc_after"] is None and part["wall_s"] is None
    assert part["acc_before"] == 0.5  # what it logged is kept
    # an ATESD run that died before its first training step (a worker crash in the step-0 validation): listed
    # as incomplete with what it logged; the same history in a run marked done is an error naming the file
    early = make_run(tmp_path, "adaptive_per_difficulty", 1, done=False)
    head = (early / rs.METRICS).read_text().splitlines()[:2]  # the boundary record, the step-0 validation
    (early / rs.METRICS).write_text("\n".join(head) + "\n")
    died = rw.run_row("adaptive_per_difficulty", 1, early, None)
    assert (died["status"], died["steps"], died["attempts"], died["acc_before"]) == ("incomplete", 0, 1, 0.5)
    assert died["alpha_per_bucket_per_window"] == [] and died["acc_after"] is None
    (early / rs.DONE).write_text(json.dumps({"wall_s": 1.0}))
    with pytest.raises(ValueError, match=r"metrics.jsonl: no ATESD training rows"):
        rw.run_row("adaptive_per_difficulty", 1, early, None)


def test_difficulty_needs_exactly_one_problem(tmp_path):
    path = tmp_path / "0.jsonl"
    path.write_text(json.dumps({"input": "user\nadd 9 mod 10\n", "score": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"0.jsonl:1: the input names 0 held-out problems"):
        rw.accuracy_by_difficulty(path, rw.load_difficulties(val_file(tmp_path)))


def test_discover_names_foreign_directories(tmp_path):
    make_run(tmp_path, "grpo", 0)
    (tmp_path / "grpo" / "seed0.incomplete-20260101T000000Z").mkdir()
    found = rw.discover(tmp_path)
    assert [(m, s) for m, s, _ in found.runs] == [("grpo", 0)] and len(found.aside) == 1
    (tmp_path / "grpo" / "notes").mkdir()
    with pytest.raises(ValueError, match="notes: neither a run"):
        rw.discover(tmp_path)
    (tmp_path / "grpo" / "notes").rmdir()
    (tmp_path / "ppo").mkdir()
    with pytest.raises(ValueError, match="ppo: not a method of the sweep"):
        rw.discover(tmp_path)
    (tmp_path / "ppo").rmdir()
    # a sweep stack's records and the arms' start state live beside the runs and are not runs
    (tmp_path / rs.STACKS).mkdir()
    (tmp_path / "initial_state" / "seed0" / "actor").mkdir(parents=True)
    assert [(m, s) for m, s, _ in rw.discover(tmp_path).runs] == [("grpo", 0)]


def test_rows_carry_provenance_and_the_report_says_when_it_differs(tmp_path):
    """A sweep arm's record.json (commit, dirty, CPU, config hash) reaches its row; runs of two commits or CPUs
    are reported as such; the per-run SE √(p(1−p)/n) stands next to each accuracy, n the step-0 dump's rows."""
    root, out = tmp_path / "runs", tmp_path / "docs" / "r.md"
    for seed, (commit, cpu) in enumerate([("a" * 40, "AMD EPYC"), ("b" * 40, "Intel Xeon")]):
        d = make_run(root, "fixed-0", seed, model="m" * 64)
        record = {"config_sha256": "c" * 64, "commit": commit, "dirty": seed == 1, "cpu": cpu}
        (d / "record.json").write_text(json.dumps(record))
    rows = rr.write(root, out, None)
    assert [(r["commit"][:1], r["dirty"], r["cpu"]) for r in rows] == [
        ("a", False, "AMD EPYC"),
        ("b", True, "Intel Xeon"),
    ]
    text = out.read_text()
    assert "they differ between runs" in text and "`bbbbbbbbbbbb` (dirty) on Intel Xeon" in text
    p, n = rows[0]["acc_after"], rows[0]["val_rows"]
    assert n == 4  # make_run's dumps hold the four scores of a step
    assert f"{p:.4f} ± {math.sqrt(p * (1 - p) / n):.3f}" in text
    assert rr.provenance_lines([{"commit": None, "dirty": None, "cpu": None}])[0].startswith(
        "- Code and machine: **not recorded**"
    )
    # the archive keeps the record
    assert any(m.name == "record.json" for m in ra.members(root))


# ---------------------------------------------------------------------------------------------- claims


def row(method, seed, **kw):
    m = sp.METHODS[method]
    base = {
        "method": method,
        "mode": rw.mode(method),
        "alpha": m.alpha,
        "seed": seed,
        "status": "done",
        "acc_after": None,
        "acc_before": 0.5,
        "acc_by_difficulty_before": None,
        "acc_by_difficulty_after": None,
        "kl_step1": None,
        "kl_mean_over_steps": None,
        "alpha_per_window": [],
        "alpha_per_bucket_per_window": [],
    }
    return base | kw


def fixed_rows(acc_by_alpha, kl=lambda a, s: a + 0.01 * s):
    return [
        row(
            f"fixed-{a:g}",
            s,
            acc_after=acc_by_alpha[a][s],
            kl_step1=kl(a, s),
            kl_mean_over_steps=kl(a, s),
        )
        for a in sp.FIXED_ALPHAS
        for s in range(len(acc_by_alpha[a]))
    ]


def test_compare_is_welch():
    c = rc.compare([1.0, 2.0, 3.0], [0.0, 0.0, 1.0])
    se = math.sqrt(1.0 / 3 + (1 / 3) / 3)
    assert c["delta"] == pytest.approx(2 - 1 / 3) and c["se"] == pytest.approx(se)
    assert c["beyond"] is True  # Δ = 1.67 > 2·SE = 1.33
    assert rc.compare([1.0], [0.0, 1.0])["beyond"] is None


def test_claim_a_monotone_and_violations():
    rows = fixed_rows({a: [0.5, 0.5, 0.5] for a in sp.FIXED_ALPHAS})
    a = rc.claim_a(rows, "kl_step1")
    assert a["holds"] is True and a["seeds"] == [0, 1, 2] and a["violations"] == []
    # seed 1 is flat between 0.5 and 0.75: named with its values
    rows = fixed_rows(
        {a: [0.5, 0.5] for a in sp.FIXED_ALPHAS}, lambda a, s: 0.5 if (s == 1 and a == 0.75) else a
    )
    a = rc.claim_a(rows, "kl_step1")
    assert a["holds"] is False and a["violations"] == [[1, 0.5, 0.75, 0.5, 0.5]]
    # an incomplete α set: that seed is not evaluated; none complete → not evaluable
    partial = [r for r in rows if not (r["seed"] == 1 and r["alpha"] == 1.0)]
    assert rc.claim_a(partial, "kl_step1")["incomplete_seeds"] == [1]
    assert rc.claim_a([r for r in rows if r["alpha"] != 1.0], "kl_step1")["holds"] is None
    # an unfinished run does not count
    assert rc.claim_a([r | {"status": "incomplete"} for r in rows], "kl_step1")["holds"] is None


def test_same_rollouts_per_seed():
    rows = [
        row(f"fixed-{a:g}", s, rollout_step1=[20.0, 0.5 if (s, a) != (1, 1.0) else 0.4])
        for a in (0.0, 1.0)
        for s in (0, 1)
    ]
    assert rc.same_rollouts(rows) == {0: True, 1: False}
    assert rc.same_rollouts(rows[:1]) == {}  # one run: nothing to compare


def test_claim_b_full_exposure_best_or_not():
    clear = {a: [0.5 + 0.01 * s for s in range(3)] for a in sp.FIXED_ALPHAS} | {1.0: [0.8, 0.81, 0.82]}
    b = rc.claim_b(fixed_rows(clear))
    assert b["reliably_best"] is True and b["holds"] is False
    assert b["winners_per_seed"] == {0: [1.0], 1: [1.0], 2: [1.0]}
    close = clear | {0.5: [0.8, 0.79, 0.83]}  # α = 0.5 within noise of α = 1
    b = rc.claim_b(fixed_rows(close))
    assert b["comparisons"][0.5]["beyond"] is False and b["holds"] is True
    assert b["winners_per_seed"][2] == [0.5]
    one_seed = {a: v[:1] for a, v in clear.items()}
    assert rc.claim_b(fixed_rows(one_seed))["holds"] is None


def test_claim_c_adaptive_vs_best_fixed():
    fixed = fixed_rows({a: [0.5, 0.52, 0.54] for a in sp.FIXED_ALPHAS} | {0.5: [0.6, 0.61, 0.62]})
    beats = (
        fixed
        + [row("adaptive", s, acc_after=0.8 + 0.01 * s) for s in range(3)]
        + [row("grpo", s, acc_after=0.55) for s in range(3)]
    )
    c = rc.claim_c(beats)
    assert c["best_fixed"] == "fixed-0.5" and c["holds"] is True
    assert set(c["comparisons"]) == {*sp.GROUPS["fixed"], "grpo"}
    level = fixed + [row("adaptive", s, acc_after=v) for s, v in enumerate([0.6, 0.63, 0.6])]
    assert rc.claim_c(level)["holds"] is False
    # claim (c) is about the batch-level arm: a per-difficulty arm far above the fixed α changes nothing
    per_bucket = [row("adaptive_per_difficulty", s, acc_after=0.9 + 0.01 * s) for s in range(3)]
    assert rc.claim_c(level + per_bucket)["holds"] is False
    assert rc.claim_c(fixed + per_bucket)["holds"] is None
    assert rc.claim_c(fixed)["holds"] is None


# seed → (easiest bucket's α, hardest bucket's α) per hold window
EASY_HARD = {
    0: ([0.9, 0.8, 0.7], [0.1, 0.2, 0.1]),
    1: ([0.5, 0.6, 0.4], [0.5, 0.4, 0.6]),
    2: ([0.1, 0.2, 0.1], [0.9, 0.8, 0.7]),
}


def test_per_difficulty_comparison_and_reading():
    """Per-bucket vs batch-level adaptive, OPSD and the best fixed α; the reading follows the numbers."""
    levels = lambda x: {"2": x, "8": x / 2}  # noqa: E731
    rows = fixed_rows({a: [0.5, 0.52, 0.54] for a in sp.FIXED_ALPHAS} | {0.5: [0.6, 0.61, 0.62]})
    rows += [
        row(
            "adaptive",
            s,
            acc_after=0.6 + 0.01 * s,
            acc_by_difficulty_after=levels(0.6),
            alpha_per_window=[0.5],
        )
        for s in range(3)
    ]
    rows += [
        row(
            "adaptive_per_difficulty",
            s,
            acc_after=0.8 + 0.01 * s,
            acc_by_difficulty_before=levels(0.4),
            acc_by_difficulty_after=levels(0.8 + 0.01 * s),
            alpha_per_bucket_per_window=[[e, 0.5, h] for e, h in zip(*EASY_HARD[s], strict=True)],
        )
        for s in range(3)
    ]
    p = rc.per_difficulty(rows)
    assert p["best_fixed"] == "fixed-0.5"
    assert list(p["arms"]) == ["adaptive_per_difficulty", "adaptive", "fixed-1", "fixed-0.5"]
    per = p["arms"]["adaptive_per_difficulty"]
    assert per["acc_after"] == pytest.approx([0.8, 0.81, 0.82])
    assert per["levels"]["before"] == pytest.approx({"2": 0.4, "8": 0.2})  # fmean of three equal floats
    assert per["levels"]["after"] == pytest.approx({"2": 0.81, "8": 0.405})
    up, down = p["comparisons"]["adaptive"]
    assert up["delta"] == pytest.approx(0.2) and up["beyond"] is True and down["beyond"] is False
    # easiest vs hardest bucket's α over the 3 windows: seed 0 above (Δ 0.67, SE 0.067), 1 within, 2 below
    up, down = p["easy_vs_hard"][0]
    assert up["delta"] == pytest.approx(0.8 - 0.4 / 3) and up["se"] == pytest.approx(math.sqrt(0.04 / 9))
    assert [rr._direction(*p["easy_vs_hard"][s]) for s in range(3)] == ["above", "within", "below"]
    text = rr._per_difficulty_reading(p)
    assert "`adaptive`: Δ = +0.2000" in text and "above it beyond noise" in text
    assert "above the hardest's beyond noise in seeds [0], below it beyond noise in seeds [2], within" in text
    assert "within noise in seeds [1]" in text
    # reversed: per-bucket below batch-level adaptive beyond noise; one seed: not evaluable
    low = [
        r | {"acc_after": 0.3 + 0.01 * r["seed"]} if r["method"] == "adaptive_per_difficulty" else r
        for r in rows
    ]
    up, down = rc.per_difficulty(low)["comparisons"]["adaptive"]
    assert up["beyond"] is False and down["beyond"] is True
    assert "`adaptive`: Δ = -0.3000, 2·SE" in rr._per_difficulty_reading(rc.per_difficulty(low))
    one = [r for r in rows if not (r["method"] == "adaptive_per_difficulty" and r["seed"] > 0)]
    assert "not evaluable" in rr._per_difficulty_reading(rc.per_difficulty(one))


# ---------------------------------------------------------------------------------------------- report


def sweep(root):
    """All methods × 2 seeds; KL at step 1 grows with α; seed 1 of random left incomplete."""
    for seed in (0, 1):
        for method, m in sp.METHODS.items():
            a = m.alpha if m.alpha is not None else 0.5
            kl = tuple(0.1 + a + 0.01 * seed + 0.001 * s for s in range(4))
            make_run(
                root,
                method,
                seed,
                kl=kl,
                acc=(0.5, 0.5 + 0.1 * a + 0.01 * seed),
                done=not (method == "random" and seed == 1),
            )


def test_report_lists_every_run_and_draws(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "docs" / "toy-reproduction.md"
    sweep(root)
    (out.parent / "toy-reproduction").mkdir(parents=True)
    (out.parent / "toy-reproduction" / "reading.md").write_text("The lead's reading.\n")
    rows = rr.write(root, out, val_file(tmp_path))
    results = json.loads((out.parent / "toy-reproduction" / "results.json").read_text())
    assert results == json.loads(json.dumps(rows)) and len(results) == 2 * len(sp.METHODS)
    assert [(r["method"], r["seed"]) for r in results] == [(m, s) for m in sp.METHODS for s in (0, 1)]
    md = out.read_text()
    every = md.split("## Every run\n")[1].split("\n## ")[0]
    assert len([line for line in every.splitlines() if line.startswith("| ")]) == 1 + 2 * len(sp.METHODS)
    assert "| random | 1 | incomplete | 4/4 |" in every
    assert (
        "(a) KL(p_T ‖ p_S) grows monotonically" in md and md.count("**reproduces**") >= 2
    )  # claim (a), both keys
    assert "The lead's reading." in md
    # issue 14: the per-difficulty rows and section; the batch-level adaptive plots and claim (c) keep to adaptive
    per = [r for r in results if r["method"] == "adaptive_per_difficulty"]
    assert [r["mode"] for r in per] == ["adaptive_per_difficulty"] * 2
    assert all(r["alpha_per_bucket_per_window"] == [bucket_alphas(0), bucket_alphas(1)] for r in per)
    assert all(r["alpha_per_bucket_per_window"] == [] for r in results if r not in per)
    assert [r["method"] for r in rw.adaptive_rows(results)] == ["adaptive", "adaptive"]
    section = md.split("## Exposure per difficulty (issue 14)\n")[1].split("\n## ")[0]
    assert "| per-bucket adaptive (`adaptive_per_difficulty`) | 2 |" in section
    assert "| batch-level adaptive (`adaptive`) | 2 |" in section and "| OPSD (α = 1)" in section
    assert "level 2" in section and "level 3" in section and "Reading (generated from the numbers" in section
    assert "- seed 0 (done): 2 windows; α per bucket, first window [0.900, 0.600, 0.300]" in section
    assert "toy-reproduction/per_difficulty_alpha.png" in section
    # the synthetic dumps (means 0.5, 0.75) disagree with most logged accuracies here: said, not hidden
    assert "**The dumped generations do not match the logged accuracy**" in md
    for name in rp.PLOTS:
        png = out.parent / "toy-reproduction" / name
        assert f"toy-reproduction/{name}" in md, name
        assert imread(png).shape[2] in (3, 4), name
    # every finished run has wall 100 s, steps 10 + 3·1 s, one validation of 3 s: the split is stated
    n = 2 * len(sp.METHODS) - 1
    assert f"{n} finished runs, {n * 100 / 60:.1f} min in all" in md
    assert (
        f"outside the steps (start-up of Ray, vLLM and the model, step-0 validation, shutdown) {n * 84 / 60:.1f} min"
        in md
    )


def test_report_without_adaptive_runs_removes_stale_plots(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "r.md"
    make_run(root, "adaptive", 0)
    rr.write(root, out, None)
    assert (tmp_path / "r" / "adaptive_alpha.png").exists()
    for d in (root / "adaptive",):
        for f in sorted(d.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        d.rmdir()
    make_run(root, "grpo", 0)
    rr.write(root, out, None)
    assert not (tmp_path / "r" / "adaptive_alpha.png").exists()
    md = out.read_text()
    assert (
        "*Not drawn: adaptive_alpha.png" in md and "**not evaluable yet**" in md and "*Not written yet*" in md
    )
    assert (
        "No finished `adaptive_per_difficulty` run yet." in md
        and "*Not drawn: per_difficulty_alpha.png" in md
    )


def test_cli_error_names_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="nowhere: no such sweep directory or archive"):
        rr.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.md"), "--val-file", ""])


def test_report_from_the_archive_equals_the_report_from_the_directory(tmp_path, monkeypatch):
    """The archive (recipe/atesd/tools/repro_archive.py) holds what the report reads and nothing else; read
    back, it gives the same results.json, markdown and plots as the sweep directory, runs named as there."""
    monkeypatch.chdir(tmp_path)
    root, val = Path("runs") / "toy-repro", val_file(tmp_path)
    sweep(root)
    (root / "grpo" / "seed0.incomplete-20260101T000000Z").mkdir()
    (root / "grpo" / "seed0.incomplete-20260101T000000Z" / rs.RUN).write_text("{}")
    extra = [root / "fixed-1" / "seed0" / rs.GENERATIONS / "2.jsonl", root / "fixed-1" / "seed0" / rs.LOG]
    for path in extra:
        path.write_text("not read by the report\n")
    archive = tmp_path / "packed" / "runs.tar.xz"
    ra.main([str(root), str(archive)])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert (
        names[0] == "runs/toy-repro" and names[1] == "runs/toy-repro/grpo/seed0.incomplete-20260101T000000Z"
    )
    assert "runs/toy-repro/fixed-1/seed0/val_generations/4.jsonl" in names
    aside_run = "runs/toy-repro/grpo/seed0.incomplete-20260101T000000Z/run.json"
    assert not [n for n in names if n in [*map(str, extra), aside_run] or "/checkpoints" in n]
    assert len([n for n in names if n.endswith("/" + rs.METRICS)]) == 2 * len(sp.METHODS)
    ra.pack(root, tmp_path / "again.tar.xz")
    assert (tmp_path / "again.tar.xz").read_bytes() == archive.read_bytes()  # no times, owners: same bytes
    # slimmed to what the readers use: no unread metric, no generated text; everything else kept
    with tarfile.open(archive) as tar:
        metrics = tar.extractfile("runs/toy-repro/adaptive/seed0/metrics.jsonl").read().decode()
        dump0 = tar.extractfile("runs/toy-repro/adaptive/seed0/val_generations/0.jsonl").read().decode()
    assert "actor/grad_norm" in (root / "adaptive" / "seed0" / rs.METRICS).read_text()
    assert "actor/grad_norm" not in metrics and '"attempt"' in metrics and "distill/kl_mean" in metrics
    assert [sorted(json.loads(line)) for line in dump0.splitlines()] == [["input", "score"]] * len(PROBLEMS)

    from_dir, from_archive = Path("a") / "report.md", Path("b") / "report.md"
    assert rr.write(root, from_dir, val) == rr.write(archive, from_archive, val)
    assert from_archive.read_text() == from_dir.read_text()
    assert "`runs/toy-repro/grpo/seed0.incomplete-20260101T000000Z`" in from_archive.read_text()
    results = json.loads((Path("b") / "report" / "results.json").read_text())
    assert results[0]["directory"] == "runs/toy-repro/fixed-0/seed0"
    for name in ["results.json", *rp.PLOTS]:
        assert (Path("b/report") / name).read_bytes() == (Path("a/report") / name).read_bytes(), name


def test_archive_errors_name_the_file(tmp_path, monkeypatch):
    """A missing, corrupt or foreign archive, and a bad run inside one, are errors naming the archive (and
    the run by its path in the archive, not the temporary directory it was unpacked into)."""
    monkeypatch.chdir(tmp_path)
    root, out = Path("runs"), tmp_path / "r.md"
    make_run(root, "fixed-0", 0)
    with pytest.raises(ValueError, match="relative to here"):
        ra.pack(tmp_path / "runs", tmp_path / "abs.tar.xz")
    good = tmp_path / "good.tar.xz"
    dump0 = root / "fixed-0" / "seed0" / rs.GENERATIONS / "0.jsonl"
    kept = dump0.read_text()
    dump0.write_text(kept + '{"input": "user\\nadd 1 mod 10"}\n')  # an entry without its score
    with pytest.raises(ValueError, match=f"{re.escape(str(dump0))}:5: not a record the readers take"):
        ra.pack(root, good)
    assert not good.exists()
    dump0.write_text(kept)
    ra.pack(root, good)
    truncated = tmp_path / "truncated.tar.xz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "notes.txt").write_text("not an archive\n")
    for path in (truncated, tmp_path / "notes.txt"):
        with pytest.raises(
            SystemExit, match=rf"{re.escape(str(path))}: not a readable \.tar\.xz archive of a sweep"
        ):
            rr.main([str(path), "--out", str(out), "--val-file", ""])
    foreign = tmp_path / "foreign.tar.xz"
    with tarfile.open(foreign, "w:xz") as tar:
        tar.add(root / "fixed-0" / "seed0" / rs.RUN, arcname="run.json")
    with pytest.raises(ValueError, match=f"{re.escape(str(foreign))}: its first member is not a directory"):
        rr.write(foreign, out, None)
    with tarfile.open(foreign, "w:xz") as tar:
        tar.add(root, arcname="runs", recursive=False)
        tar.add(root / "fixed-0" / "seed0" / rs.RUN, arcname="elsewhere/run.json")
    with pytest.raises(
        ValueError,
        match=f"{re.escape(str(foreign))}: 'elsewhere/run.json' is outside the sweep directory 'runs'",
    ):
        rr.write(foreign, out, None)
    (root / "fixed-0" / "seed0" / rs.RUN).unlink()
    ra.pack(root, good)
    with pytest.raises(ValueError, match=f"^{re.escape(str(good))}: runs/fixed-0/seed0: no run.json"):
        rr.write(good, out, None)
    assert not out.exists()


def test_the_committed_report_regenerates_from_its_archive(tmp_path, toy_repo):
    """`make reproduce-toy-report` (the command docs/toy-reproduction/reading.md gives): the committed archive
    of run records, with the held-out file `make toy` builds, gives the committed markdown and results.json."""
    docs = rs.REPO_ROOT / "docs"
    out = tmp_path / "toy-reproduction.md"
    out.with_suffix("").mkdir()
    (out.with_suffix("") / "reading.md").write_text((docs / "toy-reproduction" / "reading.md").read_text())
    rr.write(docs / "toy-reproduction" / "runs.tar.xz", out, toy_repo / "data" / "toy" / "val.parquet")
    assert out.read_text() == (docs / "toy-reproduction.md").read_text()
    committed = (docs / "toy-reproduction" / "results.json").read_text()
    assert (tmp_path / "toy-reproduction" / "results.json").read_text() == committed


# ---------------------------------------------------------------------------------------------- real configs


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    """A stand-in checkout root (``ATESD_REPO``) holding the toy world's parquet files, as ``make toy`` writes
    them: check_atesd_config opens the probe and training files, and a fresh clone has no data/toy yet (CI
    failed here when the test read the developer's own data/toy). The model directory is never opened."""
    from recipe.atesd.toy.build_data import build

    root = tmp_path_factory.mktemp("toy_repo")
    build(root / "data" / "toy", seed=0)
    return root


@pytest.mark.parametrize("method", list(sp.METHODS))
def test_every_run_composes_and_passes_the_entry_points_checks(tmp_path, method, toy_repo, monkeypatch):
    """Each run's overrides compose against its entry point's config (hydra in-process, as launch/presets.py
    does: a misspelled key fails here) with the toy world and pass the checks the entry point makes before
    Ray starts (check_atesd_config for ATESD, verl's validate_config for both); the resolved values are the
    asked ones. The toy data files come from ``toy_repo``; the model path need not exist for this."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from launch.presets import CONFIG_DIR
    from recipe.atesd.glue.platform import configure_process_env, with_platform_override

    configure_process_env()
    monkeypatch.setenv("ATESD_REPO", str(toy_repo))
    d = rs.run_dir(tmp_path, method, 2)
    args = with_platform_override(rs.overrides(method, 2, 40, 10, d, "toy", [], MODEL), "cpu")
    config = "grpo_trainer" if method == "grpo" else "atesd_trainer"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name=config, overrides=args)
    OmegaConf.resolve(cfg)
    if method != "grpo":
        from recipe.atesd.glue.config_check import check_atesd_config

        check_atesd_config(cfg)
        m = sp.METHODS[method]
        assert cfg.controller.exposure_mode == m.mode and cfg.controller_seed == 2
        assert (cfg.controller.hold_window, cfg.controller.lookahead, cfg.controller.batch_decisions) == (
            2,
            3,
            2,
        )
        if m.mode == "fixed":
            assert cfg.controller.alpha == m.alpha
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    # verl's sampler shuffles with a generator seeded by data.seed (verl/trainer/ppo/utils.py create_rl_sampler)
    assert cfg.data.shuffle is True and cfg.data.seed == 2 and cfg.data.train_batch_size == 16
    assert cfg.actor_rollout_ref.rollout.seed == 2
    assert (
        cfg.trainer.total_training_steps == 40 and cfg.trainer.save_freq == 40 and cfg.trainer.test_freq == 10
    )
    assert cfg.trainer.validation_data_dir == str(d / rs.GENERATIONS)
    assert cfg.trainer.default_local_dir == str(d / rs.CHECKPOINTS)
    assert cfg.actor_rollout_ref.model.path.endswith("artifacts/toy-qwen3")


def test_execute_logs_output_and_points_the_file_logger(tmp_path):
    """The real runner (a stand-in command instead of an entry point): output appended to train.log, the
    metrics history path exported; no checkpoint → the run is failed and not marked done."""
    d = rs.run_dir(tmp_path, "grpo", 0)
    cmd = [sys.executable, "-c", "import os; print('logger at', os.environ['VERL_FILE_LOGGER_PATH'])"]
    outcome, detail = rs.run_one("grpo", 0, cmd, d, 3)
    assert outcome == "failed" and "no checkpoint at step 3" in detail
    assert (d / rs.LOG).read_text() == f"logger at {d / rs.METRICS}\n"
    assert not (d / rs.DONE).exists()


# ---------------------------------------------------------------------------------------------- the study plan


def test_study_plan_arms_are_sweep_arms_with_the_recipe_defaults(tmp_path):
    """The study's table (issue 30, docs/toy-study.md): 16 ATESD arms that a sweep may carry (only controller,
    teacher_prompt and distill keys), none with the reproduction's demo controller overrides; the GRPO grid as
    separate runs with their lr; every arm the registered criteria name is in the table."""
    from recipe.atesd.tools.study_stats import load_criteria

    plan = sp.PLANS["study"]
    arms = sp.select_methods(["arms"], plan)
    assert len(arms) == 16 and "fixed-1" in arms and "anchor_residual-adaptive" in arms
    for arm in arms:
        assert set(rs.arm_keys(arm, plan)) <= {"controller", "teacher_prompt", "distill"}, arm
        assert not set(sp.CONTROLLER) & set(plan.methods[arm].overrides()), arm
    assert rs.arm_keys("adaptive-paper", plan)["controller"]["reward_norm"] == "none"
    assert rs.arm_keys("anchor_residual-0.5", plan)["distill"]["target"] == "anchor_residual"
    assert rs.arm_keys("reference_free", plan)["teacher_prompt"] == {"teacher_context": "reference_free"}
    grid = sp.select_methods(["grpo-grid"], plan)
    assert grid == ["grpo-lr2e-05", "grpo-lr1e-04", "grpo-lr5e-04"]
    assert sp.select_methods(["all"], plan) == [
        *arms,
        "grpo",
    ]  # the study: the arms and GRPO at the grid's lr
    assert plan.methods["grpo"].overrides() == plan.methods["grpo-lr1e-04"].overrides()
    run = rs.overrides("grpo-lr1e-04", 100, 200, 50, tmp_path, "toy", [], MODEL, plan)
    assert "actor_rollout_ref.actor.optim.lr=0.0001" in run and rs.command("grpo-lr1e-04", run, "py", plan)[
        2
    ] == ("recipe.atesd.main_grpo")
    stack = rs.stack_overrides(arms, 0, 200, 50, tmp_path, "toy", [], MODEL, plan)
    assert "controller_seed=0" in stack and not set(sp.CONTROLLER) & set(stack)
    named = {c.arm_a for c in load_criteria(rs.REPO_ROOT / "docs/toy-study/criteria.yaml")}
    named |= {c.arm_b for c in load_criteria(rs.REPO_ROOT / "docs/toy-study/criteria.yaml")}
    assert named <= set(arms), named - set(arms)
    with pytest.raises(ValueError, match="unknown method 'fixed-0'"):
        sp.select_methods(["fixed-0"], plan)  # the reproduction's α = 0 arm is not in the study
