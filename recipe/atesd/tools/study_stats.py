"""Statistics for comparing exposure policies over seeds (issue 28 item 4): what a study resolves, its verdicts.

``python -m recipe.atesd.tools.study_stats RESULTS CRITERIA [--metric acc_after]`` prints :func:`report` for a
study's results.json (recipe/atesd/tools/repro_report.py) and its criteria file (docs/toy.md, "Running a
comparison").

A study runs every arm (a fixed α, adaptive, OPSD, …: recipe/atesd/tools/sweep_plans.py ``METHODS``) with the
same seeds; for one seed every arm sees the same data order and the same step-1 rollouts (paired rollouts,
recipe/atesd/glue/seeded_rollout.py), so arms are compared **per seed**. The outcome is one number per run,
e.g. held-out accuracy (recipe/atesd/tools/repro_rows.py ``acc_after``). Inputs are ``{seed: value}``.

- :func:`arm_summary`: mean over seeds, sample SD s (n − 1), SE = s/√n, CI = mean ± t_{(1+level)/2, n−1}·SE.
- :func:`paired_difference`: d_s = a_s − b_s per shared seed, the same t-CI of mean(d), and a percentile
  bootstrap CI (resample the n differences with replacement ``n_boot`` times, seeded; the (1 ∓ level)/2
  quantiles of the resampled means). Pairing removes the seed-to-seed variation the arms share: SD(d) is
  what the power of a comparison depends on, not the arms' own SDs.
- :func:`seeds_needed`, :func:`minimum_detectable_effect`, :func:`paired_power`, :func:`power_table`: the
  power of a two-sided paired t-test at level α, with the central-t approximation of the noncentral t
  (Julious 2004, "Sample sizes for clinical trials with Normal data", Stat. Med. 23:1921, the one-sample
  formula, which a paired design is): power(n) ≈ F_{n−1}(δ√n/σ − t_{1−α/2, n−1}), so power(n) ≥ π iff
  n ≥ ((t_{1−α/2, n−1} + t_{π, n−1})·σ/δ)², σ = SD of the per-seed differences, δ the true mean difference.
  The minimum detectable effect of n seeds is MDE = (t_{1−α/2, n−1} + t_{π, n−1})·σ/√n: the number a null
  result must be reported with (a study that cannot see 0.02 says nothing about an effect of 0.02).
- :func:`accuracy_se`, :func:`average_at_k_se`: one run's evaluation SE, the held-out problems taken as a
  sample of the task (for Average@k, with the k sampled answers). The seed-to-seed SD already contains the part
  of it that differs between runs (Average@k's draws; a greedy answer draws nothing), so it is never added to
  a CI over seeds. The part every run shares (which problems the held-out file holds) is not in the seed SD:
  the study's CIs are about these held-out problems, and a per-run SE as large as the effect warns that
  another held-out set could read differently.
- :class:`Criterion`, :func:`load_criteria`, :func:`judge`, :func:`render_verdicts`: verdict criteria
  written before the study runs (a JSON/YAML file), judged on the envelope of the t and bootstrap CIs of a − b
  (the lower of the two lows, the higher of the two highs: both intervals must support a claim; for few
  seeds the t-CI is the wider, the percentile bootstrap under-covers there), printed with their results.

Student-t quantiles are computed here (no scipy in the environment): the CDF from the regularized incomplete
beta function (Numerical Recipes, 3rd ed., §6.4, continued fraction), inverted by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from pathlib import Path
from statistics import NormalDist

import numpy as np

# ----------------------------------------------------------------------------------------- Student t


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes §6.4, modified Lentz), x < (a + 1)/(a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def _beta_inc(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), y = 1 − x given separately (no cancellation near x = 1)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom: ½·I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    tail = 0.5 * _beta_inc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = p (Student, ``df`` degrees of freedom): bisection on :func:`t_sf` to 1e-12."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - p:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf(mid, df) > 1.0 - p else (lo, mid)
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------------------- arms and pairs


def _values(values_by_seed: Mapping, name: str) -> np.ndarray:
    """The values in seed order; a non-finite value is an error naming its seed, fewer than 2 values too."""
    for seed, v in values_by_seed.items():
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
            raise ValueError(f"{name}: seed {seed}: {v!r} is not a finite number")
    if len(values_by_seed) < 2:
        raise ValueError(f"{name}: {len(values_by_seed)} seed(s); a spread needs at least 2")
    return np.array([float(values_by_seed[s]) for s in sorted(values_by_seed)])


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


@dataclass(frozen=True)
class ArmSummary:
    """One arm over n seeds: mean, sample SD (n − 1), SE = SD/√n and the two-sided t-CI at ``level``."""

    n: int
    mean: float
    sd: float
    se: float
    ci_low: float
    ci_high: float
    level: float


def arm_summary(values_by_seed: Mapping[int, float], *, level: float = 0.95) -> ArmSummary:
    """mean ± t_{(1+level)/2, n−1}·s/√n over the seeds' values (n ≥ 2)."""
    _check_level(level)
    x = _values(values_by_seed, "arm")
    n, mean, sd = len(x), float(x.mean()), float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    half = t_quantile((1 + level) / 2, n - 1) * se
    return ArmSummary(n, mean, sd, se, mean - half, mean + half, level)


@dataclass(frozen=True)
class PairedDiff:
    """a − b over the n shared seeds: mean, SD and SE of the per-seed differences, their t-CI and percentile
    bootstrap CI (each a (low, high) pair) at ``level``."""

    n: int
    mean: float
    sd: float
    se: float
    t_ci: tuple[float, float]
    boot_ci: tuple[float, float]
    level: float


def paired_difference(
    arm_a_by_seed: Mapping[int, float],
    arm_b_by_seed: Mapping[int, float],
    *,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDiff:
    """d_s = a_s − b_s for every seed; a seed in one arm only is an error naming it (never dropped).
    t-CI: mean(d) ± t_{(1+level)/2, n−1}·SD(d)/√n. Bootstrap: ``n_boot`` resamples of the n differences with
    replacement (``numpy.random.default_rng(seed)``: the same inputs and seed give the same CI), the
    (1 − level)/2 and (1 + level)/2 quantiles of their means."""
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1, got {n_boot}")
    only_a, only_b = (
        sorted(set(arm_a_by_seed) - set(arm_b_by_seed)),
        sorted(set(arm_b_by_seed) - set(arm_a_by_seed)),
    )
    if only_a or only_b:
        raise ValueError(
            f"unpaired seeds: {only_a} in arm a only, {only_b} in arm b only (a paired comparison needs both)"
        )
    a, b = _values(arm_a_by_seed, "arm a"), _values(arm_b_by_seed, "arm b")  # both in sorted seed order
    d = a - b
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = t_quantile((1 + level) / 2, n - 1) * se
    means = d[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return PairedDiff(n, mean, sd, se, (mean - half, mean + half), (float(low), float(high)), level)


# ---------------------------------------------------------------------------------------------- power


def _check_design(sd_diff: float, alpha: float, power: float | None = None) -> None:
    """σ ≥ 0, α in (0, 1) and (when given) power in [0.5, 1): below 0.5 a study is more likely to miss δ
    than to see it (and :func:`seeds_needed`'s lower bound needs t_{power} ≥ z_{power} ≥ 0)."""
    if not sd_diff >= 0:
        raise ValueError(f"sd_diff must be ≥ 0, got {sd_diff}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if power is not None and not 0.5 <= power < 1.0:
        raise ValueError(f"power must be in [0.5, 1), got {power}")


def paired_power(sd_diff: float, delta: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level α with n seeds against a true mean difference δ:
    F_{n−1}(δ√n/σ − t_{1−α/2, n−1}) (central-t approximation, module docstring; δ > 0); 1 when σ = 0."""
    _check_design(sd_diff, alpha)
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if n < 2:
        raise ValueError(f"n must be ≥ 2 seeds, got {n}")
    if sd_diff == 0:
        return 1.0
    return 1.0 - t_sf(delta * math.sqrt(n) / sd_diff - t_quantile(1 - alpha / 2, n - 1), n - 1)


def seeds_needed(sd_diff: float, delta: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """The smallest n ≥ 2 with n ≥ ((t_{1−α/2, n−1} + t_{power, n−1})·σ/δ)², i.e. :func:`paired_power` ≥
    ``power``: the fixed point of that iteration. Found by stepping up from the normal-quantile n
    ⌈((z_{1−α/2} + z_{power})·σ/δ)²⌉, a lower bound (t quantiles exceed normal ones for power ≥ 0.5)."""
    _check_design(sd_diff, alpha, power)
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    z = NormalDist().inv_cdf
    n = max(2, math.ceil(((z(1 - alpha / 2) + z(power)) * sd_diff / delta) ** 2))
    while n < ((t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd_diff / delta) ** 2:
        n += 1
    return n


def minimum_detectable_effect(sd_diff: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE = (t_{1−α/2, n−1} + t_{power, n−1})·σ/√n: the smallest true difference n paired seeds detect with
    ``power`` (the inverse of :func:`seeds_needed`)."""
    _check_design(sd_diff, alpha, power)
    if n < 2:
        raise ValueError(f"n must be ≥ 2 seeds, got {n}")
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd_diff / math.sqrt(n)


@dataclass(frozen=True)
class PowerRow:
    """One Δ of a power table: the seeds needed to detect it, and the power of a study of ``n`` seeds (None:
    no study size given)."""

    delta: float
    seeds_needed: int
    power_at_n: float | None


def power_table(
    sd_diff: float,
    deltas: Iterable[float] = (0.01, 0.02, 0.05),
    *,
    n: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> list[PowerRow]:
    """Per Δ: :func:`seeds_needed` and, for a study of ``n`` seeds, its :func:`paired_power`. ``sd_diff`` is a
    measured SD of per-seed differences at the study's step budget (another budget, another SD)."""
    return [
        PowerRow(
            d,
            seeds_needed(sd_diff, d, alpha=alpha, power=power),
            None if n is None else paired_power(sd_diff, d, n, alpha=alpha),
        )
        for d in deltas
    ]


# ------------------------------------------------------------------------------------ evaluation noise


def accuracy_se(p: float, n_problems: int) -> float:
    """√(p(1 − p)/n): the binomial SE of one run's accuracy p over n held-out problems, one answer each
    (greedy mean@1)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if n_problems < 1:
        raise ValueError(f"n_problems must be ≥ 1, got {n_problems}")
    return math.sqrt(p * (1 - p) / n_problems)


def average_at_k_se(per_problem_means: Iterable[float]) -> float:
    """SE of Average@k over n problems: s/√n, s the sample SD (n − 1) of the per-problem means of k samples
    (docs/evaluation.md's Average@k; it contains the sampling noise of the k answers and of the problems)."""
    x = np.array(list(per_problem_means), dtype=float)
    if len(x) < 2:
        raise ValueError(f"{len(x)} problem(s); a spread needs at least 2")
    return float(x.std(ddof=1) / math.sqrt(len(x)))


# --------------------------------------------------------------------------------------------- verdicts

# rule -> (what a − b must satisfy, as text); judged on the envelope [lo, hi] of the t and bootstrap CIs
RULES = {
    "a_gt_b": "a − b > margin: supported iff lo > margin, not supported iff hi < margin",
    "a_ge_b": "a − b > −margin (non-inferiority): supported iff lo > −margin, not supported iff hi < −margin",
    "equivalent": "|a − b| < margin: supported iff −margin < lo and hi < margin, not supported iff lo > margin "
    "or hi < −margin",
}
FIELDS = ("claim", "arm_a", "arm_b", "rule", "margin")


@dataclass(frozen=True)
class Criterion:
    """A claim about arms a and b, written before the study runs: ``rule`` one of :data:`RULES`, ``margin``
    ≥ 0 in the outcome's units (> 0 for ``equivalent``)."""

    claim: str
    arm_a: str
    arm_b: str
    rule: str
    margin: float

    def __post_init__(self):
        for name in ("claim", "arm_a", "arm_b"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"field {name!r}: {value!r} is not a non-empty string")
        if self.rule not in RULES:
            raise ValueError(f"field 'rule': {self.rule!r} is not one of {', '.join(RULES)}")
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, Real) or not math.isfinite(m) or m < 0:
            raise ValueError(f"field 'margin': {m!r} is not a finite number ≥ 0")
        if self.rule == "equivalent" and m == 0:
            raise ValueError("field 'margin': rule 'equivalent' needs a margin > 0")

    def describe(self) -> str:
        """The criterion in words, e.g. ``adaptive − fixed-1 > +0.000``."""
        diff = f"{self.arm_a} − {self.arm_b}"
        return {
            "a_gt_b": f"{diff} > {self.margin:+.3f}",
            "a_ge_b": f"{diff} > {-self.margin:+.3f} (non-inferior)",
            "equivalent": f"|{diff}| < {self.margin:.3f} (equivalent)",
        }[self.rule]


def load_criteria(path: str | Path) -> list[Criterion]:
    """The criteria of a JSON or YAML file (``yaml.safe_load``, which reads JSON too: loading runs no code):
    a list of mappings with exactly the fields :data:`FIELDS`. A missing or unknown field, or a bad value, is
    an error naming the file, the row (from 1) and the field."""
    import yaml

    path = Path(path)
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty list of criteria, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i}: expected a mapping with fields {', '.join(FIELDS)}")
        missing, unknown = [f for f in FIELDS if f not in row], [f for f in row if f not in FIELDS]
        if missing:
            raise ValueError(f"{path}: row {i}: missing field {missing[0]!r} (fields: {', '.join(FIELDS)})")
        if unknown:
            raise ValueError(f"{path}: row {i}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
        try:
            out.append(Criterion(**row))
        except ValueError as e:
            raise ValueError(f"{path}: row {i}: {e}") from None
    return out


@dataclass(frozen=True)
class Verdict:
    """A criterion's outcome ("supported", "not supported" or "inconclusive") and the evidence in words."""

    criterion: Criterion
    outcome: str
    text: str


def judge(criterion: Criterion, diff: PairedDiff, *, power: float = 0.8) -> Verdict:
    """The outcome of ``criterion`` on the paired difference a − b (:func:`paired_difference` with a =
    ``criterion.arm_a``), per :data:`RULES` on the CI envelope [lo, hi]; "inconclusive" when the envelope
    straddles the boundary. The text gives both CIs, n, SD(d) and the minimum detectable effect at α = 1 −
    level and ``power`` (what a null result must be reported with)."""
    lo, hi, m = min(diff.t_ci[0], diff.boot_ci[0]), max(diff.t_ci[1], diff.boot_ci[1]), criterion.margin
    if criterion.rule == "a_gt_b":
        outcome = "supported" if lo > m else "not supported" if hi < m else "inconclusive"
    elif criterion.rule == "a_ge_b":
        outcome = "supported" if lo > -m else "not supported" if hi < -m else "inconclusive"
    else:
        outcome = (
            "supported" if -m < lo and hi < m else "not supported" if lo > m or hi < -m else "inconclusive"
        )
    alpha = 1 - diff.level
    mde = minimum_detectable_effect(diff.sd, diff.n, alpha=alpha, power=power)
    pct = f"{100 * diff.level:g}%"
    text = (
        f"{criterion.arm_a} − {criterion.arm_b} = {diff.mean:+.4f} over {diff.n} paired seeds (SD {diff.sd:.4f}); "
        f"{pct} CI t [{diff.t_ci[0]:+.4f}, {diff.t_ci[1]:+.4f}], bootstrap [{diff.boot_ci[0]:+.4f}, "
        f"{diff.boot_ci[1]:+.4f}], judged on [{lo:+.4f}, {hi:+.4f}]; minimum detectable effect {mde:.4f} "
        f"(α {alpha:.2g}, power {power:g})"
    )
    return Verdict(criterion, outcome, text)


def render_verdicts(verdicts: Iterable[Verdict]) -> str:
    """A markdown table: claim, criterion (:meth:`Criterion.describe`), outcome, evidence (:func:`judge`'s
    text); ``|`` in a claim is escaped."""
    lines = ["| claim | criterion | outcome | evidence |", "|---|---|---|---|"]
    for v in verdicts:
        cells = (v.criterion.claim, v.criterion.describe(), f"**{v.outcome}**", v.text)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def values_by_arm(rows: Iterable[Mapping], metric: str) -> dict[str, dict[int, float]]:
    """``{method: {seed: rows' metric}}`` of the finished rows of a study's results.json
    (recipe/atesd/tools/repro_report.py); a method seen twice with one seed is an error naming both."""
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        if row.get("status") != "done" or row.get(metric) is None:
            continue
        arm = out.setdefault(row["method"], {})
        if row["seed"] in arm:
            raise ValueError(f"results: {row['method']} seed {row['seed']} appears twice")
        arm[row["seed"]] = float(row[metric])
    return out


def report(rows: Iterable[Mapping], criteria: list[Criterion], metric: str = "acc_after") -> str:
    """Markdown: each arm's :func:`arm_summary`, the criteria's verdicts (:func:`render_verdicts`) and, per
    criterion, the seeds a paired study needs for Δ = 0.01 / 0.02 / 0.05 at its SD(d) (:func:`power_table`).
    A criterion naming an arm the results lack is an error naming both."""
    arms = values_by_arm(rows, metric)
    lines = [f"## Arms ({metric})", "", "| arm | n | mean | SD | 95 % CI |", "|---|---|---|---|---|"]
    for name, values in arms.items():
        a = arm_summary(values) if len(values) > 1 else None
        cells = (
            (str(a.n), f"{a.mean:.4f}", f"{a.sd:.4f}", f"[{a.ci_low:.4f}, {a.ci_high:.4f}]")
            if a
            else ("1", f"{next(iter(values.values())):.4f}", "–", "–")
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    verdicts, power = [], ["", "## Seeds needed (power 0.8, α = 0.05, at each comparison's SD(d))", ""]
    power += ["| a − b | n | SD(d) | Δ = 0.01 | Δ = 0.02 | Δ = 0.05 |", "|---|---|---|---|---|---|"]
    for c in criteria:
        missing = [arm for arm in (c.arm_a, c.arm_b) if arm not in arms]
        if missing:
            raise ValueError(f"criterion {c.claim!r}: no finished runs of {missing} for {metric}")
        diff = paired_difference(arms[c.arm_a], arms[c.arm_b])
        verdicts.append(judge(c, diff))
        needed = [str(r.seeds_needed) for r in power_table(diff.sd)]
        power.append(f"| {c.arm_a} − {c.arm_b} | {diff.n} | {diff.sd:.4f} | " + " | ".join(needed) + " |")
    return "\n".join([*lines, "", "## Verdicts", "", render_verdicts(verdicts), *power]) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="A study's verdicts and power from its results.json")
    parser.add_argument("results", help="results.json of recipe/atesd/tools/repro_report.py")
    parser.add_argument("criteria", help="the verdict criteria, written before the runs (JSON or YAML)")
    parser.add_argument("--metric", default="acc_after", help="the row field compared (default acc_after)")
    args = parser.parse_args(argv)
    rows = json.loads(Path(args.results).read_text(encoding="utf-8"))
    print(report(rows, load_criteria(args.criteria), args.metric), end="")


if __name__ == "__main__":
    main()
