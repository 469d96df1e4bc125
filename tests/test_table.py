"""recipe/atesd/table.py on synthetic evaluate_run outputs: both protocols, their difference, errors."""

import csv
import json
import random
import statistics
from pathlib import Path

import pytest

from recipe.atesd.table import (
    MEAN,
    best_checkpoint_table,
    build_table,
    default_fixed_step,
    fixed_step_table,
    read_scores,
)

K = 4


def write_run(root: Path, name: str, method: str, seed: int, scores: dict[int, dict[str, float]], k: int = K):
    """An evaluate_run folder: run.json + step_N/summary.json with ``mean@k`` per benchmark."""
    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"name": name, "method": method, "seed": seed}))
    for step, per_bench in scores.items():
        (run / f"step_{step}").mkdir()
        benchmarks = {b: {f"mean@{k}": v, "std": 0.0} for b, v in per_bench.items()}
        summary = {"n_samples": k, "mean": statistics.fmean(per_bench.values()), "benchmarks": benchmarks}
        (run / f"step_{step}" / "summary.json").write_text(json.dumps(summary))
    return run


# Method "early": benchmark a peaks at step 10, b at step 20, both lower at the last step 30 — so the papers'
# protocol mixes steps 10 and 20 and beats the fixed step 30. Seeds add +-0.02 around the curve.
EARLY = {10: {"a": 0.60, "b": 0.30}, 20: {"a": 0.50, "b": 0.40}, 30: {"a": 0.45, "b": 0.35}}
FLAT = {10: {"a": 0.40, "b": 0.20}, 20: {"a": 0.42, "b": 0.22}, 30: {"a": 0.44, "b": 0.24}}
OFFSETS = {0: -0.02, 1: 0.0, 2: 0.02}


@pytest.fixture
def evals(tmp_path):
    root = tmp_path / "eval"
    for seed, off in OFFSETS.items():
        for method, curve in (("early", EARLY), ("flat", FLAT)):
            shifted = {s: {b: v + off for b, v in per.items()} for s, per in curve.items()}
            write_run(root, f"{method}-s{seed}", method, seed, shifted)
    return root


def test_fixed_step_is_the_mean_and_std_over_seeds(evals):
    scores = read_scores([evals])
    assert default_fixed_step(scores) == 30
    table = fixed_step_table(scores, 30)
    cell = table["early"]["a"]
    assert cell.steps == (30,)
    assert cell.mean == pytest.approx(0.45) and cell.std == pytest.approx(0.02)  # stdev of .43 .45 .47
    assert table["early"][MEAN].mean == pytest.approx((0.45 + 0.35) / 2)
    assert table["early"][MEAN].values[2] == pytest.approx((0.47 + 0.37) / 2)


def test_best_checkpoint_picks_a_step_per_benchmark_and_mixes_them(evals):
    scores = read_scores([evals])
    best = best_checkpoint_table(scores)
    assert best["early"]["a"].steps == (10,) and best["early"]["b"].steps == (20,)
    assert best["early"][MEAN].steps == (10, 20)
    assert best["early"][MEAN].mean == pytest.approx((0.60 + 0.40) / 2)
    # a monotone curve: the best checkpoint is the last one, so both protocols agree
    assert best["flat"]["a"].steps == (30,) and best["flat"][MEAN].mean == pytest.approx(
        fixed_step_table(scores, 30)["flat"][MEAN].mean
    )


def test_outputs_state_both_protocols_and_the_gap(evals, tmp_path):
    text = build_table([evals], out=tmp_path / "t")
    assert "## Fixed step 30 (the honest number)" in text
    assert "| early | 3 | 45.0 ± 2.0 | 35.0 ± 2.0 | 40.0 ± 2.0 |" in text
    assert "60.0 ± 2.0 (step 10)" in text and "50.0 ± 2.0 (step 10,20)" in text
    assert "- early: +10.0 (best 50.0 ± 2.0 vs step 30 40.0 ± 2.0)" in text
    assert "- flat: +0.0" in text
    assert (tmp_path / "t" / "table.md").read_text() == text
    with open(tmp_path / "t" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3  # protocols x methods x (a, b, mean)
    row = next(
        r
        for r in rows
        if r["protocol"] == "best_checkpoint" and r["method"] == "early" and r["benchmark"] == "b"
    )
    assert row["steps"] == "20" and float(row["mean"]) == pytest.approx(0.40) and row["n_seeds"] == "3"
    assert json.loads(row["per_seed"]) == {"0": 0.38, "1": 0.4, "2": 0.42}
    assert (tmp_path / "t" / "curves.png").stat().st_size > 10_000


def test_selection_bias_on_pure_noise(tmp_path):
    """No step is better than another (every score = 0.5 + noise): the best-checkpoint mean still comes out above
    the fixed-step mean — the bias the table states. By construction best >= fixed per benchmark; it is equal
    only if the last step happens to be the best on all three benchmarks (chance (1/5)^3 for iid noise)."""
    rng = random.Random(0)
    root = tmp_path / "eval"
    for seed in range(3):
        scores = {s: {b: 0.5 + rng.gauss(0, 0.05) for b in ("a", "b", "c")} for s in (10, 20, 30, 40, 50)}
        write_run(root, f"noise-s{seed}", "noise", seed, scores)
    scores = read_scores([root])
    gap = best_checkpoint_table(scores)["noise"][MEAN].mean - fixed_step_table(scores, 50)["noise"][MEAN].mean
    # Expected gap: the maximum of 5 iid seed-means, each with std 0.05 / sqrt(3) = 0.029, lies ~1.16 std above
    # their mean, ~+0.033; seen +0.024 with this seed.
    assert gap > 0


def test_an_explicit_step_and_missing_evaluations(evals):
    scores = read_scores([evals])
    assert fixed_step_table(scores, 10)["early"]["a"].mean == pytest.approx(0.60)
    (evals / "early-s1" / "step_30" / "summary.json").unlink()  # still running: skipped, not a score
    scores = read_scores([evals])
    assert default_fixed_step(scores) == 20
    with pytest.raises(
        ValueError, match=r"method 'early': seed\(s\) \[1\] have no complete evaluation at step 30"
    ):
        fixed_step_table(scores, 30)
    assert best_checkpoint_table(scores)["early"]["a"].steps == (10,)


def test_runs_with_other_n_samples_are_refused(evals):
    write_run(evals, "other-s0", "other", 0, {30: {"a": 0.1, "b": 0.1}}, k=12)
    with pytest.raises(ValueError, match=r"different n_samples \[4, 12\]"):
        read_scores([evals])


def test_two_runs_with_one_method_and_seed_are_refused(evals):
    write_run(evals, "early-s0-again", "early", 0, {30: {"a": 0.1, "b": 0.1}})
    with pytest.raises(ValueError, match="are both method 'early' seed 0"):
        read_scores([evals])


def test_no_runs(tmp_path):
    with pytest.raises(ValueError, match="no run.json"):
        read_scores([tmp_path])
