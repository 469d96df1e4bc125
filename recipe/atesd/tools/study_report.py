"""The toy-world study's report (issue 30; the design and criteria, registered before the runs: docs/toy-study.md):
``python -m recipe.atesd.tools.study_report [RECORDS] [--criteria FILE] [--val-file FILE] [--out MD]``
(``make study-toy-report``).

Reads every run of the study plan (recipe/atesd/tools/sweep_plans.py ``PLANS["study"]``: the arms of the
``all`` group on the plan's seeds, and GRPO's lr grid) from RECORDS, the archive docs/toy-study/runs.tar.xz or
the sweep directory runs/toy-study (recipe/atesd/tools/repro_archive.py ``read_records``), and writes, into the
folder of ``MD`` (default docs/toy-study/results.md):

- ``results.json``: one row per run, finished or not (recipe/atesd/tools/repro_rows.py ``run_row``; the fields:
  docs/toy-study.md, "The results file");
- the PNGs of :data:`PLOTS`, drawn from those rows only;
- ``MD``: the runs, the arms, the paired differences, the verdicts, the curves, the mismatch, the controller's α,
  the per-difficulty table and the wall time. Generated: the reading is written by hand in docs/toy-study.md.

The outcome is held-out accuracy at the last step (``acc_after``: verl's greedy ``val-core/.../acc/mean@1`` on
data/toy/heldout.parquet). Arms are compared per seed (recipe/atesd/tools/study_stats.py: t and bootstrap CIs of
the paired differences, the criteria judged on their envelope, each with its minimum detectable effect). The
criteria file's rows and the claims' composite rules (:func:`claims`) are judged only once every arm has finished
every seed of the plan: before that the report says which runs are missing and gives interim tables, no verdict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from recipe.atesd.tools.repro_archive import Records, read_records
from recipe.atesd.tools.repro_report import provenance_lines
from recipe.atesd.tools.repro_rows import load_difficulties, one_model
from recipe.atesd.tools.run_report import _figure, _save, _table
from recipe.atesd.tools.study_stats import (
    accuracy_se,
    arm_summary,
    judge,
    load_criteria,
    minimum_detectable_effect,
    paired_difference,
    render_verdicts,
    values_by_arm,
)
from recipe.atesd.tools.sweep_plans import PLANS

PLAN = PLANS["study"]
ARMS = PLAN.groups["all"]  # the study's arms, in the plan's order
GRID = PLAN.groups["grpo-grid"]  # GRPO's lr grid, on its own seed (docs/toy-study.md, amendment 1)
OPSD = "fixed-1"
FIXED = tuple(m for m in ARMS if m.startswith("fixed-"))  # by α, ascending
CONTROLS = ("answer_only", "reference_free", "other_reference")
REVEAL = tuple(
    m for m in ARMS if m not in CONTROLS and PLAN.methods[m].mode != "grpo"
)  # teacher sees the reference
CONTROLLED = tuple(m for m in ARMS if PLAN.methods[m].mode == "adaptive")
OUTCOME = "acc_after"
LEVEL = 0.95
# the descriptive comparisons the design reports beside the claims ("Also reported, not claims")
ALSO = (("adaptive", "random"), ("pw-opsd", OPSD), ("schedule-down", "schedule-up"), (OPSD, "grpo"))
CLAIM_A = (4, 2)  # (a): increasing in >= 4 of the 5 seeds: supported; in <= 2: not supported
CLAIM_G = (0.125, 3)  # (g): last Beta mean within 0.125 of the best fixed α in >= 3 of the 5 seeds
PLOTS = {
    "forest.png": "paired differences of held-out accuracy at the last step, vs OPSD and vs the best fixed α",
    "curves.png": "held-out accuracy over steps, mean over seeds with the 95 % t-CI band",
    "mismatch.png": "KL(p_T ‖ p_S) and top-1 disagreement at step 1 vs fixed α, each seed (claim a)",
    "alpha.png": "the controlled arms' α per hold window and Beta mean per decision, each seed (claim g)",
}


# ---------------------------------------------------------------------------------------------- numbers


def study_values(rows: list[dict], metric: str = OUTCOME) -> dict[str, dict[int, float]]:
    """``{arm: {seed: metric}}`` of the finished runs of the study's arms on the plan's seeds."""
    return values_by_arm([r for r in rows if r["method"] in ARMS and r["seed"] in PLAN.seeds], metric)


def missing_runs(values: Mapping[str, Mapping[int, float]]) -> list[tuple[str, int]]:
    """(arm, seed) of every run of the design without a finished outcome."""
    return [(m, s) for m in ARMS for s in PLAN.seeds if s not in values.get(m, {})]


def missing_text(missing: list[tuple[str, int]]) -> str:
    """The missing runs per seed: ``seed 1: every arm; seed 0: fixed-1, grpo``."""
    parts = []
    for seed in PLAN.seeds:
        arms = [m for m, s in missing if s == seed]
        if arms:
            parts.append(f"seed {seed}: {'every arm' if len(arms) == len(ARMS) else ', '.join(arms)}")
    return "; ".join(parts)


def best_fixed(values: Mapping[str, Mapping[int, float]]) -> str | None:
    """The fixed-α arm with the highest mean outcome over its seeds (chosen after the fact)."""
    means = {m: statistics.fmean(values[m].values()) for m in FIXED if values.get(m)}
    return max(means, key=means.get) if means else None


def monotone_seeds(rows: list[dict], key: str) -> dict[int, bool]:
    """Per seed with every fixed arm's ``key`` (e.g. ``kl_step1``): is it strictly increasing in α?"""
    by = {(r["method"], r["seed"]): r[key] for r in rows if r["method"] in FIXED and r[key] is not None}
    seeds = sorted({s for _, s in by if all((m, s) in by for m in FIXED)} & set(PLAN.seeds))
    return {s: all(a < b for a, b in pairwise(by[m, s] for m in FIXED)) for s in seeds}


def claim_a(rows: list[dict], key: str) -> tuple[str, dict[int, bool]]:
    """Claim (a) on ``key``: the outcome and the per-seed monotonicity."""
    per_seed = monotone_seeds(rows, key)
    if set(per_seed) != set(PLAN.seeds):
        return "pending", per_seed
    up = sum(per_seed.values())
    return (
        "supported" if up >= CLAIM_A[0] else "not supported" if up <= CLAIM_A[1] else "inconclusive"
    ), per_seed


def claim_g(rows: list[dict], best: str | None) -> tuple[str, list[tuple[int, float, float]]]:
    """Claim (g): per seed of ``adaptive``, its last Beta mean and the distance to the best fixed α (of the arm
    ``best``, :func:`best_fixed`)."""
    if best is None:
        return "pending", []
    target = PLAN.methods[best].alpha
    runs = sorted(
        (r["seed"], r["beta_mean_per_decision"][-1])
        for r in rows
        if r["method"] == "adaptive" and r["status"] == "done" and r["beta_mean_per_decision"]
    )
    found = [(s, m, abs(m - target)) for s, m in runs if s in PLAN.seeds]
    if {s for s, _, _ in found} != set(PLAN.seeds):
        return "pending", found
    near = sum(d <= CLAIM_G[0] for _, _, d in found)
    return ("supported" if near >= CLAIM_G[1] else "not supported"), found


def claims(verdicts) -> list[tuple[str, str, str]]:
    """The composite rules of docs/toy-study.md over the criteria rows' outcomes: (claim, rule, outcome).

    (b) supported if any of its rows is, not supported if all are not, else inconclusive; (c) per controlled arm
    (``adaptive``, ``adaptive-paper``), supported if all its rows are, not supported if any is not (amendment 2),
    else inconclusive. The rows of (d)–(f) are verdicts of their own."""
    out = []
    b = [v.outcome for v in verdicts if v.criterion.claim.startswith("(b)")]
    if b:
        outcome = (
            "supported"
            if "supported" in b
            else "not supported"
            if set(b) == {"not supported"}
            else "inconclusive"
        )
        out.append(("(b) α = 1 is not the best fixed exposure", "any row supported", outcome))
    for arm in dict.fromkeys(v.criterion.arm_a for v in verdicts if v.criterion.claim.startswith("(c)")):
        c = [v.outcome for v in verdicts if v.criterion.claim.startswith("(c)") and v.criterion.arm_a == arm]
        outcome = (
            "supported"
            if set(c) == {"supported"}
            else "not supported"
            if "not supported" in c
            else "inconclusive"
        )
        out.append((f"(c) {arm} ≥ every fixed α and > OPSD", "all its rows supported", outcome))
    return out


def curve_summary(rows: list[dict], arm: str) -> list[tuple[int, float, float, float, int]]:
    """(step, mean, CI low, CI high, n) of an arm's held-out accuracy over its finished seeds, at every step all
    of them evaluated (CI: the t-CI of :func:`study_stats.arm_summary`; one seed: the value, no interval)."""
    curves = [
        dict(map(tuple, r["acc_curve"]))
        for r in rows
        if r["method"] == arm and r["status"] == "done" and r["seed"] in PLAN.seeds
    ]
    if not curves:
        return []
    out = []
    for step in sorted(set.intersection(*(set(c) for c in curves))):
        by_seed = dict(enumerate(c[step] for c in curves))
        if len(by_seed) > 1:
            a = arm_summary(by_seed, level=LEVEL)
            out.append((step, a.mean, a.ci_low, a.ci_high, a.n))
        else:
            out.append((step, by_seed[0], by_seed[0], by_seed[0], 1))
    return out


# ---------------------------------------------------------------------------------------------- plots


def plot_forest(tables, path: Path) -> None:
    """:func:`against`'s tables, one panel each (those with a row)."""
    panels = [(f"vs {what} ({b})", pairs) for what, b, _, pairs in tables if pairs]
    fig = _figure(4.2 * max(len(panels), 1) + 1.0, 0.28 * max(len(ARMS), 4) + 1.2)
    for n, (title, rows) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), n)
        for y, (_, d) in enumerate(reversed(rows)):
            ax.plot(d.boot_ci, [y, y], color="C1", linewidth=4, alpha=0.4)
            ax.plot(d.t_ci, [y, y], color="C0", linewidth=1.2)
            ax.plot([d.mean], [y], "ko", markersize=3)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_yticks(range(len(rows)), [a for a, _ in reversed(rows)], fontsize=7)
        ax.set(xlabel="Δ held-out accuracy (blue: t-CI, orange: bootstrap)", title=title)
    _save(fig, path)


def plot_curves(rows: list[dict], path: Path) -> None:
    groups = [
        ("fixed α and GRPO", [*FIXED, "grpo"]),
        ("controls vs OPSD", [OPSD, *CONTROLS]),
        ("controlled exposure vs OPSD", [OPSD, *CONTROLLED]),
        ("others vs OPSD", [OPSD, *(m for m in ARMS if m not in (*FIXED, *CONTROLS, *CONTROLLED, "grpo"))]),
    ]
    fig = _figure(11.0, 7.0)
    for n, (title, arms) in enumerate(groups, 1):
        ax = fig.add_subplot(2, 2, n)
        for k, arm in enumerate(arms):
            pts = curve_summary(rows, arm)
            if pts:
                steps, mean, low, high, _ = zip(*pts, strict=True)
                ax.plot(steps, mean, "o-", color=f"C{k}", markersize=3, label=arm)
                ax.fill_between(steps, low, high, color=f"C{k}", alpha=0.15)
        ax.set(xlabel="step", ylabel="held-out accuracy", title=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    _save(fig, path)


def plot_mismatch(rows: list[dict], path: Path) -> None:
    fig = _figure(9.0, 3.4)
    for n, (key, label) in enumerate(
        (("kl_step1", "KL at step 1"), ("top1_disagreement_step1", "top-1 at step 1")), 1
    ):
        ax = fig.add_subplot(1, 2, n)
        for k, seed in enumerate(PLAN.seeds):
            pts = [
                (PLAN.methods[m].alpha, r[key])
                for m in FIXED
                for r in rows
                if r["method"] == m and r["seed"] == seed and r[key] is not None
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color=f"C{k}", markersize=3, label=f"seed {seed}")
        ax.set(xlabel="fixed α", ylabel=label, title=f"{label} vs α")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    _save(fig, path)


def plot_alpha(rows: list[dict], path: Path) -> None:
    arms = [m for m in CONTROLLED if any(r["method"] == m and r["alpha_per_window"] for r in rows)]
    fig = _figure(4.0 * max(len(arms), 1) + 1.0, 3.4)
    for n, arm in enumerate(arms, 1):
        ax = fig.add_subplot(1, len(arms), n)
        for k, r in enumerate(r for r in rows if r["method"] == arm and r["alpha_per_window"]):
            ax.step(
                range(len(r["alpha_per_window"])),
                r["alpha_per_window"],
                where="mid",
                color=f"C{k}",
                alpha=0.4,
            )
            means = r["beta_mean_per_decision"]
            ax.plot(range(len(means)), means, "o-", color=f"C{k}", markersize=2, label=f"seed {r['seed']}")
        ax.set(
            xlabel="decision (hold window)",
            ylabel="α (step) / Beta mean (dots)",
            ylim=(-0.02, 1.02),
            title=arm,
        )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    _save(fig, path)


# ---------------------------------------------------------------------------------------------- markdown


def _mean(values: list) -> float | None:
    """The mean of the values that are not None (None if none is)."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _f(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _diff_row(label: str, d) -> list[str]:
    mde = minimum_detectable_effect(d.sd, d.n, alpha=1 - d.level) if d.n > 1 else None
    return [
        label,
        str(d.n),
        f"{d.mean:+.4f}",
        f"[{d.t_ci[0]:+.4f}, {d.t_ci[1]:+.4f}]",
        f"[{d.boot_ci[0]:+.4f}, {d.boot_ci[1]:+.4f}]",
        f"{d.sd:.4f}",
        _f(mde),
    ]


DIFF_HEADER = ["a − b", "n", "mean", "95 % t-CI", "95 % bootstrap CI", "SD(d)", "MDE"]


def paired(values, a: str, b: str):
    """The paired difference a − b over their shared seeds (None with fewer than 2)."""
    shared = sorted(set(values.get(a, {})) & set(values.get(b, {})))
    if len(shared) < 2:
        return None
    return paired_difference(
        {s: values[a][s] for s in shared}, {s: values[b][s] for s in shared}, level=LEVEL
    )


def against(values) -> list[tuple[str, str, str, list[tuple[str, object]]]]:
    """The paired-difference tables: (what b is, b, the note on its choice, [(a, a − b)]) for b = OPSD and
    b = the best fixed α (none before any fixed arm finished), every other arm a with ≥ 2 shared seeds."""
    best = best_fixed(values)
    tables = [("OPSD", OPSD, ""), ("the best fixed α", best, ", chosen after the fact")]
    return [
        (what, b, note, [(a, d) for a in ARMS if a != b and (d := paired(values, a, b))])
        for what, b, note in tables
        if b
    ]


def stack_row(stack: dict, rows: list[dict]) -> list[str]:
    """A sweep stack's table row: its seed, arms, the arms that finished in it (their reset inside its time),
    exit status, wall, start-up (its start → first arm's reset) and shutdown (last arm's end → its end)."""
    start, end = datetime.fromisoformat(stack["started"]), datetime.fromisoformat(stack["finished"])
    arms = [
        r
        for r in rows
        if r["seed"] == stack["seed"]
        and r["method"] in stack["arms"]
        and r["started"]
        and start <= datetime.fromisoformat(r["started"]) <= end
    ]
    up = down = None
    if arms:
        up = (min(datetime.fromisoformat(r["started"]) for r in arms) - start).total_seconds()
        down = (end - max(datetime.fromisoformat(r["finished"]) for r in arms)).total_seconds()
    cells = [len(stack["arms"]), len(arms), stack["exit_status"]]
    return [str(stack["seed"]), *map(str, cells), _f(stack["wall_s"], 0), _f(up, 0), _f(down, 0)]


def render(found: Records, criteria, n_val: int | None, records: str, values, tables) -> str:
    """The markdown of the report (module docstring); ``values``: :func:`study_values` of the rows, ``tables``:
    :func:`against` of them."""
    rows = found.rows
    missing = missing_runs(values)
    complete = not missing
    md = [
        "# The toy-world study: results",
        "",
        f"Generated by `make study-toy-report` from `{records}` (recipe/atesd/tools/study_report.py); do not edit. "
        "The design, the criteria and the reading: [docs/toy-study.md](../toy-study.md).",
        "",
        "## Status",
        "",
    ]
    if complete:
        md.append(f"Complete: every arm finished every seed of the design ({list(PLAN.seeds)}).")
    else:
        md.append(
            f"**Interim: {len(missing)} of {len(ARMS) * len(PLAN.seeds)} runs of the design are not finished** "
            f"(seeds {list(PLAN.seeds)}); the tables below are what has finished, and no verdict is given before "
            "every run has. Missing: " + missing_text(missing) + "."
        )
    model = one_model(rows)
    md += ["", f"- Model: `{model or 'not recorded'}` (MANIFEST hash; every run the same)."]
    md += provenance_lines(rows)
    if found.aside:
        md.append(
            "- Interrupted attempts, moved aside and trained again: "
            + ", ".join(f"`{p}`" for p in found.aside)
            + "."
        )

    md += ["", "## Runs", ""]
    md.append(
        f"Every run of the records. Accuracy: greedy, on the {n_val or '?'} held-out problems, ± its SE "
        "√(p(1−p)/n) over the problems (recipe/atesd/tools/study_stats.py `accuracy_se`)."
    )
    body = []
    for r in rows:
        acc = _f(r[OUTCOME]) + (
            f" ± {accuracy_se(r[OUTCOME], n_val):.3f}" if r[OUTCOME] is not None and n_val else ""
        )
        body.append(
            [
                r["method"],
                str(r["seed"]),
                r["status"],
                f"{r['steps']}/{r['steps_budget']}",
                _f(r["acc_before"]),
                acc,
                _f(r["wall_s"], 0),
                f"`{r['config_sha256'][:19] if r['config_sha256'] else '–'}`",
            ]
        )
    md += _table(["run", "seed", "status", "steps", "acc step 0", "acc last step", "wall s", "config"], body)

    grid = [r for r in rows if r["method"] in GRID]
    if grid:
        md += ["## GRPO's learning-rate grid (seed 100)", ""]
        md.append(
            "Chosen before any arm ran (docs/toy-study.md, amendment 1): the lr with the highest accuracy at the last step."
        )
        md += _table(
            ["run", "accuracy per evaluation (step: acc)", "wall s"],
            [
                [r["method"], ", ".join(f"{s}: {v:.4f}" for s, v in r["acc_curve"]), _f(r["wall_s"], 0)]
                for r in grid
            ],
        )

    md += ["## Arms", ""]
    md.append(
        "Held-out accuracy at the last step over the finished seeds: mean, SD, 95 % t-CI (n ≥ 2); the gain over "
        "step 0 (the same model for every arm of a seed)."
    )
    body = []
    for arm in ARMS:
        v = values.get(arm, {})
        before = [
            r["acc_before"]
            for r in rows
            if r["method"] == arm and r["seed"] in v and r["acc_before"] is not None
        ]
        gain = statistics.fmean(v.values()) - statistics.fmean(before) if v and before else None
        if len(v) > 1:
            a = arm_summary(v, level=LEVEL)
            cells = [str(a.n), _f(a.mean), _f(a.sd), f"[{a.ci_low:.4f}, {a.ci_high:.4f}]"]
        else:
            cells = [str(len(v)), _f(next(iter(v.values()), None)), "–", "–"]
        body.append([arm, *cells, _f(gain)])
    md += _table(["arm", "n", "mean", "SD", "95 % t-CI", "gain over step 0"], body)

    best = best_fixed(values)
    md += ["## Paired differences", ""]
    md.append(
        "Per seed d = a − b (the arms of a seed share data order and step-1 rollouts), the mean of d with its 95 % "
        "t-CI and percentile bootstrap CI (10,000 resamples), SD(d), and the minimum detectable effect of this many "
        "seeds at α 0.05, power 0.8 (MDE). The best fixed α is chosen by its mean after seeing the results: its "
        "table is descriptive. ![forest](forest.png)"
    )
    for what, b, note, pairs in tables:
        md += ["", f"**vs {what} (`{b}`{note})**"]
        md += _table(DIFF_HEADER, [_diff_row(f"{a} − {b}", d) for a, d in pairs])
    verdicts = []
    md += ["## Verdicts", ""]
    if not complete:
        md.append("Pending: judged once every run of the design has finished (see Status).")
    else:
        for c in criteria:
            verdicts.append(judge(c, paired_difference(values[c.arm_a], values[c.arm_b], level=LEVEL)))
        md.append(
            f"The criteria rows of docs/toy-study/criteria.yaml ({len(criteria)} comparisons at the 95 % level: "
            "about one of them can fall either way by chance alone)."
        )
        md += ["", render_verdicts(verdicts).rstrip(), ""]
        md += _table(
            ["claim", "composite rule", "outcome"], [[c, r, f"**{o}**"] for c, r, o in claims(verdicts)]
        )
    for key, label in (("kl_step1", "KL"), ("top1_disagreement_step1", "top-1 disagreement")):
        outcome, per_seed = claim_a(rows, key)
        seeds = ", ".join(
            f"seed {s}: {'increasing' if up else 'not increasing'}" for s, up in per_seed.items()
        )
        md.append(
            f"- (a) {label} at step 1 strictly increasing over α = 0.25 < 0.5 < 0.75 < 1 in ≥ {CLAIM_A[0]} of "
            f"{len(PLAN.seeds)} seeds: **{outcome}** ({seeds or 'no seed yet'})."
        )
    outcome, found_g = claim_g(rows, best)
    target = PLAN.methods[best].alpha if best else None
    seeds = ", ".join(f"seed {s}: {m:.3f} (|Δ| {d:.3f})" for s, m, d in found_g)
    md.append(
        f"- (g) `adaptive`'s last Beta mean within {CLAIM_G[0]} of the best fixed α ({_f(target, 2)}, `{best}`) in ≥ "
        f"{CLAIM_G[1]} of {len(PLAN.seeds)} seeds: **{outcome}** ({seeds or 'no seed yet'})."
    )
    md += [
        "",
        "Also reported, not claims (and the best reveal-based arm against each control, chosen after the fact):",
    ]
    best_reveal = max(
        (m for m in REVEAL if values.get(m)), key=lambda m: statistics.fmean(values[m].values()), default=None
    )
    extra = [*ALSO, *((best_reveal, c) for c in CONTROLS if best_reveal)]
    md += _table(DIFF_HEADER, [_diff_row(f"{a} − {b}", d) for a, b in extra if (d := paired(values, a, b))])

    md += [
        "## Learning curves",
        "",
        "Mean held-out accuracy over the finished seeds at each evaluation. ![curves](curves.png)",
    ]
    steps = sorted({s for r in rows for s, _ in r["acc_curve"] if r["method"] in ARMS})
    body = []
    for arm in ARMS:
        pts = {s: m for s, m, *_ in curve_summary(rows, arm)}
        body.append([arm, *(_f(pts.get(s)) for s in steps)])
    md += _table(["arm", *(f"step {s}" for s in steps)], body)

    md += ["## Mismatch", ""]
    md.append(
        "`distill/kl_mean` (token mean of KL(p_T ‖ p_S)) and `distill/top1_disagreement` at step 1, where every arm of "
        "a seed scores the same rollouts, and their means over training (docs/metrics.md). ![mismatch](mismatch.png)"
    )
    keys = ("kl_step1", "top1_disagreement_step1", "kl_mean_over_steps", "top1_disagreement_mean_over_steps")
    body = []
    for arm in [m for m in ARMS if PLAN.methods[m].mode != "grpo"]:
        done = [r for r in rows if r["method"] == arm and r["status"] == "done" and r["seed"] in PLAN.seeds]
        body.append([arm, *(_f(_mean([r[k] for r in done])) for k in keys)])
    md += _table(["arm", "KL step 1", "top-1 step 1", "KL over training", "top-1 over training"], body)

    md += ["## The controller's α", ""]
    md.append(
        "Per run of a controlled arm: α of each hold window and the Beta mean a/(a+b) at the first and last decision. ![alpha](alpha.png)"
    )
    body = []
    for r in rows:
        if r["method"] in CONTROLLED and r["alpha_per_window"]:
            means = r["beta_mean_per_decision"]
            buckets = r["alpha_per_bucket_per_window"]
            last = ", ".join(f"{a:.2f}" for a in buckets[-1]) if buckets else "–"
            body.append(
                [
                    r["method"],
                    str(r["seed"]),
                    str(len(r["alpha_per_window"])),
                    _f(statistics.fmean(r["alpha_per_window"]), 3),
                    _f(means[0] if means else None, 3),
                    _f(means[-1] if means else None, 3),
                    last,
                ]
            )
    md += _table(
        ["arm", "seed", "windows", "mean α", "first Beta mean", "last Beta mean", "last α per bucket"], body
    )

    md += ["## Per difficulty", ""]
    md.append(
        "Held-out accuracy at the last step per difficulty (the dumps of verl's validation), mean over the finished seeds; `step 0`: before training."
    )
    diffs_by = {}
    for r in rows:
        if r["method"] in ARMS and r["status"] == "done" and r["seed"] in PLAN.seeds:
            for name, key in (
                ("step 0", "acc_by_difficulty_before"),
                (r["method"], "acc_by_difficulty_after"),
            ):
                for k, v in (r[key] or {}).items():
                    diffs_by.setdefault(name, {}).setdefault(k, []).append(v)
    levels = sorted({k for d in diffs_by.values() for k in d}, key=int)
    md += _table(
        ["arm", *levels],
        [
            [name, *(_f(statistics.fmean(d[k]) if k in d else None, 3) for k in levels)]
            for name in ["step 0", *ARMS]
            if (d := diffs_by.get(name))
        ],
    )

    md += ["## Wall time", ""]
    md.append(
        "Per arm, mean over its finished runs: the wall time (a sweep arm: from its reset to its last validation; GRPO: "
        "command to exit), its training steps (Σ `timing_s/step`), validations after step 0 (Σ `timing_s/testing`) "
        "and the rest. Per stack: start-up (command → first arm's reset) and shutdown (last arm → exit)."
    )
    body = []
    for arm in [*ARMS, *GRID]:
        done = [r for r in rows if r["method"] == arm and r["status"] == "done" and r["wall_s"]]
        if done:
            split = ("wall_s", "steps_s", "testing_s", "outside_steps_s")
            body.append([arm, str(len(done)), *(_f(_mean([r[k] for r in done]), 0) for k in split)])
    md += _table(["arm", "runs", "wall s", "steps s", "validation s", "outside s"], body)
    body = [stack_row(st, rows) for st in found.stacks]
    md += _table(
        ["stack seed", "arms", "finished in it", "exit status", "wall s", "start-up s", "shutdown s"], body
    )
    total_wall = sum(st["wall_s"] for st in found.stacks) + sum(
        r["wall_s"] for r in rows if r["status"] == "done" and PLAN.methods[r["method"]].mode == "grpo"
    )
    total_steps = sum(r["steps_s"] or 0.0 for r in rows if r["status"] == "done")
    if total_wall:
        md.append(
            f"Outside training steps: {1 - total_steps / total_wall:.2f} of {total_wall / 3600:.2f} h of wall time."
        )
    md += ["", "## Figures", ""] + [f"- `{name}`: {text}" for name, text in PLOTS.items()]
    return "\n".join(md).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- files


def write(
    records: str | Path, out: str | Path, criteria: str | Path, val_file: str | Path | None
) -> list[dict]:
    """Write ``out`` (markdown), ``results.json`` and the PNGs into ``out``'s folder from ``records`` (the study's
    sweep directory or its archive); return the rows. Nothing is written when the records or the criteria are
    bad (an error naming the file, the run or the row)."""
    rules = load_criteria(criteria)
    unknown = sorted({a for c in rules for a in (c.arm_a, c.arm_b)} - set(ARMS))
    if unknown:
        raise ValueError(f"{criteria}: arms {unknown} are not arms of the study plan ({', '.join(ARMS)})")
    difficulties = load_difficulties(val_file) if val_file else None
    found = read_records(records, difficulties, PLAN.methods)
    rows = found.rows
    one_model(rows)  # before anything is written
    out = Path(out)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    values = study_values(rows)
    tables = against(values)  # the bootstraps, once for the markdown and the forest plot
    md = render(found, rules, len(difficulties) if difficulties else None, str(records), values, tables)
    plot_forest(tables, folder / "forest.png")
    plot_curves(rows, folder / "curves.png")
    plot_mismatch(rows, folder / "mismatch.png")
    plot_alpha(rows, folder / "alpha.png")
    (folder / "results.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    out.write_text(md, encoding="utf-8")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "records",
        nargs="?",
        default="docs/toy-study/runs.tar.xz",
        help="the study's sweep directory or its archive (python -m recipe.atesd.tools.repro_archive --plan study)",
    )
    parser.add_argument("--criteria", default="docs/toy-study/criteria.yaml", help="the registered criteria")
    parser.add_argument(
        "--val-file",
        default="data/toy/heldout.parquet",
        help="held-out parquet (difficulty per problem); '' = none",
    )
    parser.add_argument("--out", default="docs/toy-study/results.md", help="the markdown report")
    args = parser.parse_args(argv)
    try:
        rows = write(args.records, args.out, args.criteria, args.val_file or None)
    except (ValueError, OSError, KeyError) as err:
        sys.exit(f"study_report: {err}")
    done = sum(r["status"] == "done" for r in rows)
    print(f"study report: {args.out} ({len(rows)} runs, {done} finished)")


if __name__ == "__main__":
    main()
