"""The toy-world study's report (recipe/atesd/tools/study_report.py) on synthetic run directories of the study
plan (tests/test_repro.py ``make_run``): planted effects give the verdicts the registered rules give them, the
interim report gives none, the archive reads as the directory, the results file is documented. No stack starts.

Accuracies are planted per arm and seed as base + seed effect + a small deterministic wobble (|wobble| ≤ 0.004,
so SD(d) > 0): a planted difference of ±0.05 or more is ≥ 12 wobbles away from 0 and clears any CI of 5 seeds,
a planted 0 leaves the CI straddling 0.
"""

import json
import re
from pathlib import Path

import pytest
from test_repro import make_run, val_file

from recipe.atesd.tools import repro_archive as ra
from recipe.atesd.tools import repro_rows as rw
from recipe.atesd.tools import repro_sweep as rs
from recipe.atesd.tools import study_report as sr
from recipe.atesd.tools import sweep_plans as sp
from recipe.atesd.tools.study_stats import Criterion, Verdict

STUDY = sp.PLANS["study"]
CRITERIA = rs.REPO_ROOT / "docs" / "toy-study" / "criteria.yaml"
BASE = {arm: 0.80 for arm in sr.ARMS} | {"fixed-0.5": 0.83, "adaptive": 0.85, "adaptive-paper": 0.70}


def wobble(arm: str, seed: int) -> float:
    return 0.002 * ((3 * sr.ARMS.index(arm) + 7 * seed) % 5 - 2)


def accuracy(arm: str, seed: int) -> float:
    return BASE[arm] + 0.01 * seed + wobble(arm, seed)


def study(root, seeds=STUDY.seeds, kl_down_seed=4):
    """Every arm of the study on ``seeds``, 4 steps, evaluations at 0, 2, 4; KL at step 1 rises with α except in
    ``kl_down_seed``; the adaptive arms' Beta mean ends at 2 / (2 + 2) = 0.5, the planted best fixed α."""
    for seed in seeds:
        for arm in sr.ARMS:
            m = STUDY.methods[arm]
            alpha = m.alpha if m.mode == "fixed" and arm in sr.FIXED else 0.5
            step1 = 0.1 + (1 - alpha if seed == kl_down_seed else alpha)
            final = accuracy(arm, seed)
            make_run(
                root,
                arm,
                seed,
                kl=(step1, 0.2, 0.2, 0.2),
                acc=(0.55, (0.55 + final) / 2, final),
                test_freq=2,
                plan=STUDY,
                beta=lambda window: (1.0 + window, 2.0),
                times=("2026-01-01T00:01:00+00:00", "2026-01-01T00:05:00+00:00"),
            )
        stacks = Path(root) / rs.STACKS
        stacks.mkdir(parents=True, exist_ok=True)
        record = {
            "seed": seed,
            "arms": [a for a in sr.ARMS if a != "grpo"],
            "exit_status": 0,
            "wall_s": 600.0,
            "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:10:00+00:00",
        }
        (stacks / f"seed{seed}-20260101T000000Z.json").write_text(json.dumps(record))


def verdict_line(md: str, criterion: str) -> str:
    """The verdict table's outcome of the row whose criterion reads ``criterion``."""
    line = next(x for x in md.splitlines() if f"| {criterion} |" in x)
    return re.search(r"\*\*(.+?)\*\*", line).group(1)


def test_planted_effects_give_the_registered_verdicts(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "docs" / "results.md"
    study(root)
    rows = sr.write(root, out, CRITERIA, val_file(tmp_path))
    md = out.read_text()
    assert len(rows) == len(sr.ARMS) * len(STUDY.seeds) and "Complete: every arm finished" in md
    assert "Interim" not in md
    # (c): adaptive is +0.05 over OPSD and over every fixed α but fixed-0.5 (+0.02): all rows supported
    assert verdict_line(md, "adaptive − fixed-1 > +0.000") == "supported"
    assert verdict_line(md, "adaptive − fixed-0.5 > -0.020 (non-inferior)") == "supported"
    # adaptive-paper is 0.10 under OPSD: "beats OPSD" not supported, so its composite is not supported
    assert verdict_line(md, "adaptive-paper − fixed-1 > +0.000") == "not supported"
    composite = dict(re.findall(r"\| (\(c\) [^|]+?) \| all its rows supported \| \*\*(.+?)\*\* \|", md))
    assert composite == {
        "(c) adaptive ≥ every fixed α and > OPSD": "supported",
        "(c) adaptive-paper ≥ every fixed α and > OPSD": "not supported",
    }
    # (b): fixed-0.5 is +0.03 over OPSD (supported); fixed-0.25 and 0.75 equal OPSD up to the wobble
    assert verdict_line(md, "fixed-0.5 − fixed-1 > +0.000") == "supported"
    assert verdict_line(md, "fixed-0.25 − fixed-1 > +0.000") == "inconclusive"
    assert re.search(
        r"\| \(b\) α = 1 is not the best fixed exposure \| any row supported \| \*\*supported\*\* \|", md
    )
    # (a): KL at step 1 rises with α in seeds 0-3, falls in seed 4: 4 of 5, supported
    assert "(a) KL at step 1 strictly increasing" in md and "**supported** (seed 0: increasing" in md
    assert "seed 4: not increasing" in md
    # (g): the best fixed α is fixed-0.5 (planted), adaptive's last Beta mean 0.5 in every seed
    assert "best fixed α (0.50, `fixed-0.5`) in ≥ 3 of 5 seeds: **supported**" in md
    # paired differences: the OPSD table has every other arm, with the planted mean difference
    opsd = md.split("**vs OPSD (`fixed-1`)**")[1].split("**vs the best")[0]
    assert len(re.findall(r"^\| \S+ − fixed-1 \| 5 \|", opsd, re.M)) == len(sr.ARMS) - 1
    planted = sum(accuracy("adaptive", s) - accuracy("fixed-1", s) for s in STUDY.seeds) / 5
    assert f"| adaptive − fixed-1 | 5 | {planted:+.4f} |" in opsd
    # the stacks' start-up (00:00 → 00:01) and shutdown (00:05 → 00:10)
    assert re.search(r"^\| 0 \| 16 \| 16 \| 0 \| 600 \| 60 \| 300 \|$", md, re.M)
    for name in sr.PLOTS:
        assert (out.parent / name).stat().st_size > 0, name
    results = json.loads((out.parent / "results.json").read_text())
    assert results == json.loads(json.dumps(rows))
    assert all(r["model_sha256"] is None and r["config_sha256"].startswith("command:") for r in results)


def test_interim_report_gives_no_verdict_and_names_the_missing_runs(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "docs" / "results.md"
    study(root, seeds=(0, 1))
    (root / "grpo" / "seed1" / rs.DONE).unlink()
    sr.write(root, out, CRITERIA, val_file(tmp_path))
    md = out.read_text()
    assert "**Interim: 52 of 85 runs of the design are not finished**" in md
    assert "Missing: seed 1: grpo; seed 2: every arm; seed 3: every arm; seed 4: every arm." in md
    assert "Pending: judged once every run of the design has finished" in md
    assert "**supported**" not in md and "**not supported**" not in md
    assert (
        "(a) KL at step 1 strictly increasing over α = 0.25 < 0.5 < 0.75 < 1 in ≥ 4 of 5 seeds: **pending**"
        in md
    )
    # interim tables: two seeds give CIs
    assert re.search(r"^\| adaptive − fixed-1 \| 2 \|", md, re.M)


def test_the_archive_reads_as_the_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, val = Path("runs") / "toy-study", val_file(tmp_path)
    study(root, seeds=(0, 1))
    archive = tmp_path / "packed.tar.xz"
    ra.main(["--plan", "study", str(root), str(archive)])
    sr.write(root, Path("a") / "results.md", CRITERIA, val)
    sr.write(archive, Path("b") / "results.md", CRITERIA, val)
    from_dir, from_archive = (Path(x) / "results.md" for x in "ab")
    assert from_archive.read_text() == from_dir.read_text().replace(f"from `{root}`", f"from `{archive}`")
    assert (Path("a") / "results.json").read_text() == (Path("b") / "results.json").read_text()


def test_bad_criteria_and_mixed_models_are_errors_naming_them(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "docs" / "results.md"
    study(root, seeds=(0,))
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("- {claim: x, arm_a: adaptive, arm_b: fixed-0.3, rule: a_gt_b, margin: 0.0}\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(criteria))}: arms \['fixed-0.3'\] are not arms"):
        sr.write(root, out, criteria, None)
    meta = json.loads((root / "adaptive" / "seed0" / rs.RUN).read_text())
    meta["model"] = {"path": "m", "sha256": "abc", "source": "manifest"}
    (root / "adaptive" / "seed0" / rs.RUN).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="runs of different models cannot share one table"):
        sr.write(root, out, CRITERIA, None)
    assert not out.parent.exists()


def verdicts(claim: str, outcomes: list[str], arm_a="adaptive") -> list[Verdict]:
    return [
        Verdict(Criterion(claim, arm_a, f"fixed-{k}", "a_gt_b", 0.0), o, "") for k, o in enumerate(outcomes)
    ]


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        (["inconclusive", "supported", "not supported"], "supported"),
        (["not supported"] * 3, "not supported"),
        (["not supported", "inconclusive", "not supported"], "inconclusive"),
    ],
)
def test_claim_b_composite(b, expected):
    assert sr.claims(verdicts("(b) x", b)) == [
        ("(b) α = 1 is not the best fixed exposure", "any row supported", expected)
    ]


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (["supported"] * 4, "supported"),
        (["supported", "not supported", "supported", "inconclusive"], "not supported"),
        (["supported", "inconclusive", "supported", "supported"], "inconclusive"),
    ],
)
def test_claim_c_composite_per_controlled_arm(c, expected):
    got = sr.claims(verdicts("(c) y", c) + verdicts("(c) y", ["supported"], arm_a="adaptive-paper"))
    assert [o for _, _, o in got] == [expected, "supported"]


def test_the_results_file_is_documented(tmp_path):
    """docs/toy-study.md, "The results file", names every field of a results row (repro_rows.run_row), and no
    other."""
    doc = (rs.REPO_ROOT / "docs" / "toy-study.md").read_text()
    section = doc.split("## The results file")[1].split("\n## ")[0]
    first_cells = re.findall(r"^\| (`[^|]+) \|", section, re.M)
    documented = [name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)]
    row = rw.run_row("fixed-1", 0, make_run(tmp_path, "fixed-1", 0, plan=STUDY), None, STUDY.methods)
    assert sorted(documented) == sorted(row)


def test_the_committed_report_regenerates_from_its_archive(tmp_path, monkeypatch):
    """`make study-toy-report`: the committed archive of run records, with the held-out file `make toy` builds,
    gives the committed results.md and results.json."""
    from recipe.atesd.toy.build_data import build

    build(tmp_path / "toy", seed=0)
    monkeypatch.chdir(rs.REPO_ROOT)
    docs = Path("docs") / "toy-study"
    out = tmp_path / "out" / "results.md"
    sr.write(docs / "runs.tar.xz", out, docs / "criteria.yaml", tmp_path / "toy" / "heldout.parquet")
    assert out.read_text() == (docs / "results.md").read_text()
    assert (out.parent / "results.json").read_text() == (docs / "results.json").read_text()
