"""The claims of the toy-world reproduction (issue 13) and issue 14's per-difficulty comparison, as pure
functions of the report's rows (recipe/atesd/tools/repro_rows.py :func:`run_row`): each returns its verdict
with the stated criterion's inputs; recipe/atesd/tools/repro_report.py renders them.

"Beyond noise" (:func:`compare`): a difference of seed means above :data:`NOISE` standard errors, SE from the
seed standard deviations (Welch); with 3 seeds a screen, not a test.
"""

from __future__ import annotations

import math
import statistics

from recipe.atesd.tools.repro_rows import PER_BUCKET_MODE, done_rows, per_difficulty_rows
from recipe.atesd.tools.sweep_plans import FIXED_ALPHAS, METHODS

NOISE = 2.0  # "beyond noise": a difference of means above NOISE standard errors (Welch, seed stds)


def compare(a: list[float], b: list[float]) -> dict:
    """Δ = mean(a) − mean(b), SE = sqrt(s_a²/n_a + s_b²/n_b) (Welch); ``beyond`` = Δ > NOISE·SE (None when a
    side has fewer than 2 values: no spread to compare with)."""
    delta = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return {"delta": delta, "se": None, "beyond": None}
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return {"delta": delta, "se": se, "beyond": delta > NOISE * se}


def finished_values(rows: list[dict], method: str, key: str) -> list[float]:
    """The finished runs' ``key`` values of ``method`` (runs that logged none left out)."""
    return [r[key] for r in done_rows(rows) if r["method"] == method and r[key] is not None]


def claim_a(rows: list[dict], key: str) -> dict:
    """KL(p_T ‖ p_S) grows monotonically with exposure: for each seed with every fixed α finished, ``key`` strictly
    increases along α = 0, 0.25, …, 1. ``holds``: true iff it does for every such seed (None: no such seed);
    ``violations``: (seed, α_i, α_{i+1}, value_i, value_{i+1}) of every non-increase."""
    fixed = [f"fixed-{a:g}" for a in FIXED_ALPHAS]
    by_seed: dict[int, dict[str, float]] = {}
    for r in done_rows(rows):
        if r["method"] in fixed and r[key] is not None:
            by_seed.setdefault(r["seed"], {})[r["method"]] = r[key]
    complete = {s: v for s, v in sorted(by_seed.items()) if len(v) == len(fixed)}
    violations = []
    for seed, values in complete.items():
        for i in range(len(fixed) - 1):
            (a0, m0), (a1, m1) = (FIXED_ALPHAS[i], fixed[i]), (FIXED_ALPHAS[i + 1], fixed[i + 1])
            if not values[m1] > values[m0]:
                violations.append([seed, a0, a1, values[m0], values[m1]])
    return {
        "key": key,
        "seeds": list(complete),
        "incomplete_seeds": sorted(set(by_seed) - set(complete)),
        "violations": violations,
        "holds": (not violations) if complete else None,
    }


def same_rollouts(rows: list[dict]) -> dict[int, bool]:
    """Per seed with ≥ 2 finished fixed-α runs: whether their step-1 ``ROLLOUT`` values are all equal."""
    by_seed: dict[int, list] = {}
    for r in done_rows(rows):
        if r["mode"] == "fixed" and r["rollout_step1"] is not None:
            by_seed.setdefault(r["seed"], []).append(tuple(r["rollout_step1"]))
    return {s: len(set(v)) == 1 for s, v in sorted(by_seed.items()) if len(v) > 1}


def claim_b(rows: list[dict]) -> dict:
    """Full exposure is not reliably the best fixed choice. α = 1 is *reliably best* iff its mean
    ``acc_after`` exceeds every other fixed α's by more than NOISE standard errors (:func:`compare`);
    ``holds`` = not reliably best (None unless every fixed α has ≥ 2 finished seeds). Also the best fixed α
    of each seed (ties all listed)."""
    fixed = {a: finished_values(rows, f"fixed-{a:g}", "acc_after") for a in FIXED_ALPHAS}
    comparisons = {a: compare(fixed[1.0], v) for a, v in fixed.items() if a != 1.0 and v and fixed[1.0]}
    evaluable = all(len(v) >= 2 for v in fixed.values())
    per_seed: dict[int, dict[float, float]] = {}
    for r in done_rows(rows):
        if r["mode"] == "fixed" and r["acc_after"] is not None:
            per_seed.setdefault(r["seed"], {})[r["alpha"]] = r["acc_after"]
    winners = {
        s: [a for a, v in accs.items() if v == max(accs.values())] for s, accs in sorted(per_seed.items())
    }
    reliably_best = all(c["beyond"] for c in comparisons.values()) if evaluable else None
    return {
        "comparisons": comparisons,
        "winners_per_seed": winners,
        "reliably_best": reliably_best,
        "holds": None if reliably_best is None else not reliably_best,
    }


def claim_c(rows: list[dict]) -> dict:
    """The learned controller beats fixed exposure: ``holds`` iff adaptive's mean ``acc_after`` exceeds that of
    the fixed α with the highest mean by more than NOISE standard errors (None without ≥ 2 finished seeds on
    both sides). Also adaptive against every other method."""
    adaptive = finished_values(rows, "adaptive", "acc_after")
    others = {m: v for m in METHODS if m != "adaptive" and (v := finished_values(rows, m, "acc_after"))}
    comparisons = {m: compare(adaptive, v) for m, v in others.items()} if adaptive else {}
    fixed = {m: v for m, v in others.items() if METHODS[m].mode == "fixed"}
    best = max(fixed, key=lambda m: statistics.fmean(fixed[m])) if fixed else None
    verdict = comparisons[best]["beyond"] if best and adaptive else None
    return {"best_fixed": best, "comparisons": comparisons, "holds": verdict}


def per_difficulty(rows: list[dict]) -> dict:
    """Issue 14's comparison. ``arms``: per-bucket adaptive (the :data:`PER_BUCKET_MODE` arm), batch-level
    ``adaptive``, OPSD (``fixed-1``) and the best fixed α (:func:`claim_c`'s ``best_fixed``, if another), each
    with its finished seeds' ``acc_after`` and, per difficulty level, the seed mean of
    ``acc_by_difficulty_before`` / ``_after``. ``comparisons``: per other arm with finished seeds,
    (:func:`compare` (per-bucket, arm), :func:`compare` (arm, per-bucket)): above and below beyond noise.
    ``easy_vs_hard``: seed → (:func:`compare` (α_0, α_{K−1}), :func:`compare` (α_{K−1}, α_0)) over the hold
    windows of each finished per-bucket run, α_0 the easiest bucket's α per window and α_{K−1} the hardest's (the
    windows as samples: a screen of the direction the papers' sweep reports, not a test)."""
    best = claim_c(rows)["best_fixed"]
    names = [PER_BUCKET_MODE, "adaptive", "fixed-1", *([best] if best and best != "fixed-1" else [])]
    arms = {}
    for name in names:
        runs = [r for r in done_rows(rows) if r["method"] == name and r["acc_after"] is not None]
        levels = {}
        for when in ("before", "after"):
            by_level: dict[str, list[float]] = {}
            for r in runs:
                for k, v in (r[f"acc_by_difficulty_{when}"] or {}).items():
                    by_level.setdefault(k, []).append(v)
            levels[when] = {k: statistics.fmean(v) for k, v in by_level.items()}
        arms[name] = {"acc_after": [r["acc_after"] for r in runs], "levels": levels}
    per = arms[PER_BUCKET_MODE]["acc_after"]
    comparisons = {
        name: (compare(per, arm["acc_after"]), compare(arm["acc_after"], per))
        for name, arm in arms.items()
        if name != PER_BUCKET_MODE and per and arm["acc_after"]
    }
    easy_vs_hard = {}
    for r in per_difficulty_rows(done_rows(rows)):
        easy, hard = ([w[k] for w in r["alpha_per_bucket_per_window"]] for k in (0, -1))
        easy_vs_hard[r["seed"]] = (compare(easy, hard), compare(hard, easy))
    return {"best_fixed": best, "arms": arms, "comparisons": comparisons, "easy_vs_hard": easy_vs_hard}
