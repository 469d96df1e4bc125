"""recipe/atesd/tools/study_stats.py on synthetic data with known answers: t quantiles against the printed table
and closed forms, CIs computed by hand, paired differences with exact and known noise, bootstrap coverage in a
simulation, the paired t-test's sample size against the textbook value, and the verdict rules on constructed
CIs. Every bound is derived in the test that uses it.
"""

import json
import math
import re
import statistics
from statistics import NormalDist

import numpy as np
import pytest

from recipe.atesd.tools import study_stats as ss

# ----------------------------------------------------------------------------------------- Student t


@pytest.mark.parametrize(
    ("df", "table"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045)]
)
def test_t_quantile_matches_the_printed_table(df, table):
    """t_{0.975, df} of any t table, printed to 3 decimals: equal within half a unit of the last digit."""
    assert abs(ss.t_quantile(0.975, df) - table) <= 0.0005


@pytest.mark.parametrize("p", [0.6, 0.8, 0.9, 0.975, 0.9995])
def test_t_quantile_closed_forms(p):
    """df = 1 is Cauchy: t_p = tan(π(p − ½)); df = 2: t_p = (2p − 1)/√(2p(1 − p)); both to 1e-9 relative.
    Symmetry: t_{1−p} = −t_p. Large df tends to the normal: t_{p, ν} − z_p ≈ z_p(1 + z_p²)/(4ν) (the first
    term of the Cornish–Fisher expansion), below 1e-5 for these p at ν = 10⁶."""
    assert ss.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert ss.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert ss.t_quantile(1 - p, 4) == -ss.t_quantile(p, 4)
    z = NormalDist().inv_cdf(p)
    assert abs(ss.t_quantile(p, 1e6) - z) < 2e-5


def test_t_sf_inverts_the_quantile():
    for df in (1, 3, 30):
        for p in (0.55, 0.9, 0.999):
            assert ss.t_sf(ss.t_quantile(p, df), df) == pytest.approx(1 - p, rel=1e-9)
    assert ss.t_sf(0.0, 5) == 0.5
    with pytest.raises(ValueError, match="p must be in"):
        ss.t_quantile(1.0, 3)


# ------------------------------------------------------------------------------------- arms and pairs


def test_arm_summary_by_hand():
    """0.5 … 0.9: mean 0.7, s² = (0.04 + 0.01 + 0 + 0.01 + 0.04)/4 = 0.025, SE = √(0.025/5) = √0.005;
    95 % CI 0.7 ± t_{0.975, 4}·SE with t_{0.975, 4} = 2.776 (table, ± 0.0005)."""
    s = ss.arm_summary({0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9})
    se = math.sqrt(0.005)
    assert (s.n, s.level) == (5, 0.95)
    assert s.mean == pytest.approx(0.7, abs=1e-15)
    assert s.sd == pytest.approx(math.sqrt(0.025), rel=1e-12)
    assert s.se == pytest.approx(se, rel=1e-12)
    assert abs(s.ci_high - (0.7 + 2.776 * se)) <= 0.0005 * se + 1e-12
    assert s.ci_high - s.mean == pytest.approx(s.mean - s.ci_low, rel=1e-12)
    wider = ss.arm_summary({0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9}, level=0.99)
    assert wider.ci_low < s.ci_low and wider.ci_high > s.ci_high


def test_arm_errors_name_the_seed():
    with pytest.raises(ValueError, match="seed 3: nan"):
        ss.arm_summary({1: 0.5, 3: float("nan")})
    with pytest.raises(ValueError, match="seed 0: True is not a finite number"):
        ss.arm_summary({0: True, 1: 0.5})
    assert ss.arm_summary({0: np.float32(0.5), 1: np.int64(1)}).mean == 0.75  # numpy scalars are numbers
    with pytest.raises(ValueError, match="1 seed"):
        ss.arm_summary({1: 0.5})
    with pytest.raises(ValueError, match="level"):
        ss.arm_summary({1: 0.5, 2: 0.6}, level=95)


def test_paired_difference_of_an_exact_shift_is_degenerate():
    """b = a − 0.02 on every seed: every difference is 0.02 (to float rounding), SD 0, both CIs at 0.02."""
    a = {s: 0.3 + 0.07 * s for s in range(6)}
    d = ss.paired_difference(a, {s: v - 0.02 for s, v in a.items()}, n_boot=500)
    assert d.n == 6
    assert d.mean == pytest.approx(0.02, abs=1e-12)
    assert d.sd < 1e-12
    for low, high in (d.t_ci, d.boot_ci):
        assert low == pytest.approx(0.02, abs=1e-12) and high == pytest.approx(0.02, abs=1e-12)


def test_paired_difference_with_known_noise():
    """d = 0.02 + (+0.01, −0.01, +0.01, −0.01): mean 0.02, s² = 4·10⁻⁴/3, SE = s/2, 95 % t-CI half-width
    t_{0.975, 3}·SE with t_{0.975, 3} = 3.182 (table, ± 0.0005). The arms' own spread (0.1 per seed) cancels:
    only the differences count. The bootstrap means lie in [min d, max d] = [0.01, 0.03]."""
    a = {s: 0.4 + 0.1 * s for s in range(4)}
    b = {s: a[s] - 0.02 - (0.01 if s % 2 == 0 else -0.01) for s in range(4)}
    d = ss.paired_difference(a, b, n_boot=2000)
    sd = math.sqrt(4e-4 / 3)
    assert d.mean == pytest.approx(0.02, abs=1e-12)
    assert d.sd == pytest.approx(sd, rel=1e-9)
    assert d.se == pytest.approx(sd / 2, rel=1e-9)
    assert abs((d.t_ci[1] - d.mean) - 3.182 * sd / 2) <= 0.0005 * sd / 2 + 1e-12
    assert 0.01 - 1e-12 <= d.boot_ci[0] < 0.02 < d.boot_ci[1] <= 0.03 + 1e-12


def test_pairing_is_by_seed_not_by_position():
    """The same seeds listed in another order pair the same runs: d = 0.1 on both seeds."""
    d = ss.paired_difference({0: 0.5, 1: 0.7}, {1: 0.6, 0: 0.4}, n_boot=100)
    assert d.mean == pytest.approx(0.1, abs=1e-12) and d.sd < 1e-12


def test_a_seed_in_one_arm_only_is_named():
    with pytest.raises(ValueError, match=r"\[7\] in arm a only, \[\] in arm b only"):
        ss.paired_difference({1: 0.5, 2: 0.6, 7: 0.7}, {1: 0.5, 2: 0.6})
    with pytest.raises(ValueError, match=r"\[2\] in arm a only, \[5\] in arm b only"):
        ss.paired_difference({1: 0.5, 2: 0.6}, {1: 0.5, 5: 0.6})


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    a, b = dict(enumerate(rng.normal(0.6, 0.05, 8))), dict(enumerate(rng.normal(0.58, 0.05, 8)))
    first, again = ss.paired_difference(a, b, seed=11), ss.paired_difference(a, b, seed=11)
    assert first == again
    assert ss.paired_difference(a, b, seed=12).boot_ci != first.boot_ci
    assert ss.paired_difference(a, b, seed=12).t_ci == first.t_ci  # the t-CI draws nothing


def test_ci_coverage_in_200_simulated_studies():
    """200 studies of n = 10 seeds, d ~ N(0.02, 0.03²). The t-CI covers 0.02 with probability 0.95 exactly
    (normal data); the percentile bootstrap CI is ≈ mean ± z_{0.975}·s·√((n−1)/n)/√n, so it covers with
    probability ≈ P(|T₉| < 1.96·√0.9) = 0.904 (its known small-n under-coverage; z, not t, and the plug-in
    SD). Counts out of 200: mean 190, SD √(200·0.95·0.05) = 3.1 → ≥ 190 − 4·3.1 = 178 for t; mean 180.8,
    SD √(200·0.904·0.096) = 4.2 → within 180.8 ± 4·4.2 = [164, 197] for the bootstrap (4 SD: the simulation
    is seeded, the band makes the bound hold for other seeds too)."""
    assert 1 - 2 * ss.t_sf(1.959964 * math.sqrt(0.9), 9) == pytest.approx(0.904, abs=0.001)
    rng = np.random.default_rng(1)
    covered_t = covered_boot = 0
    for i in range(200):
        d = rng.normal(0.02, 0.03, 10)
        r = ss.paired_difference(dict(enumerate(d)), dict.fromkeys(range(10), 0.0), n_boot=2000, seed=i)
        covered_t += r.t_ci[0] <= 0.02 <= r.t_ci[1]
        covered_boot += r.boot_ci[0] <= 0.02 <= r.boot_ci[1]
    assert covered_t >= 178
    assert 164 <= covered_boot <= 197


# ---------------------------------------------------------------------------------------------- power


def test_seeds_needed_textbook_value():
    """Paired t-test, d_z = δ/σ = 0.5, α = 0.05 two-sided, power 0.8 → n = 34 (G*Power 3, "means: difference
    between two dependent means"; Julious 2004, Stat. Med. 23:1921). The exact noncentral-t power is 0.80778
    at n = 34 and 0.79537 at n = 33 (numerical integration over the SD's χ²₃₂/χ²₃₃); the central-t
    approximation used here is within 3e-4 of both, on the same side of 0.8."""
    assert ss.seeds_needed(1.0, 0.5) == 34
    assert ss.paired_power(1.0, 0.5, 34) == pytest.approx(0.80778, abs=3e-4)
    assert ss.paired_power(1.0, 0.5, 33) == pytest.approx(0.79537, abs=3e-4)


def test_seeds_needed_is_the_smallest_n_and_monotone():
    for sd, delta in [(0.03, 0.01), (0.03, 0.02), (0.03, 0.05), (0.01, 0.02), (1.0, 0.1)]:
        n = ss.seeds_needed(sd, delta)
        assert ss.paired_power(sd, delta, n) >= 0.8
        assert n == 2 or ss.paired_power(sd, delta, n - 1) < 0.8
    assert ss.seeds_needed(0.03, 0.01) > ss.seeds_needed(0.03, 0.02) > ss.seeds_needed(0.03, 0.05)
    assert ss.seeds_needed(0.05, 0.02) > ss.seeds_needed(0.03, 0.02)
    assert ss.seeds_needed(0.03, 0.02, power=0.9) > ss.seeds_needed(0.03, 0.02)
    assert ss.seeds_needed(0.03, 0.02, alpha=0.01) > ss.seeds_needed(0.03, 0.02)
    assert ss.seeds_needed(0.0, 0.01) == 2
    with pytest.raises(ValueError, match="power must be in"):
        ss.seeds_needed(0.03, 0.02, power=0.3)
    with pytest.raises(ValueError, match="delta must be > 0"):
        ss.seeds_needed(0.03, 0.0)


def test_simulated_power_matches_paired_power():
    """20 000 simulated paired studies of n = 34, d ~ N(0.5, 1), two-sided t-test at α = 0.05: the rejection
    rate estimates the power to within 4·√(0.8·0.2/20000) = 0.011."""
    d = np.random.default_rng(0).normal(0.5, 1.0, size=(20000, 34))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(34))
    rate = float(np.mean(np.abs(t) > ss.t_quantile(0.975, 33)))
    assert abs(rate - ss.paired_power(1.0, 0.5, 34)) < 0.011


@pytest.mark.parametrize("n", [2, 3, 5, 10, 34])
def test_minimum_detectable_effect_inverts_seeds_needed(n):
    """At δ = MDE(n), n seeds reach the power exactly: a hair above it n suffice, a hair below n + 1 are needed."""
    mde = ss.minimum_detectable_effect(0.03, n)
    assert ss.seeds_needed(0.03, mde * (1 + 1e-9)) == n
    assert ss.seeds_needed(0.03, mde * (1 - 1e-9)) == n + 1
    assert ss.paired_power(0.03, mde, n) == pytest.approx(0.8, abs=1e-9)


def test_power_table():
    rows = ss.power_table(0.03, n=3)
    assert [r.delta for r in rows] == [0.01, 0.02, 0.05]
    assert [r.seeds_needed for r in rows] == [ss.seeds_needed(0.03, d) for d in (0.01, 0.02, 0.05)]
    assert [r.power_at_n for r in rows] == [ss.paired_power(0.03, d, 3) for d in (0.01, 0.02, 0.05)]
    assert rows[0].power_at_n < rows[1].power_at_n < rows[2].power_at_n
    assert ss.power_table(1.0, (0.5,)) == [ss.PowerRow(0.5, 34, None)]


# ------------------------------------------------------------------------------------ evaluation noise


def test_evaluation_noise():
    """Binomial: p = 0.5 over 100 problems → √(0.25/100) = 0.05; p = 0 → 0. Average@k: per-problem means
    (0, 1, 0.5, 0.5) → s = √(0.5/3), SE = s/2. With k = 1 (0/1 values, p = 3/8 of 8 problems) the sample-SD
    form is the binomial one times √(n/(n − 1))."""
    assert ss.accuracy_se(0.5, 100) == pytest.approx(0.05, rel=1e-12)
    assert ss.accuracy_se(0.0, 112) == 0.0
    assert ss.average_at_k_se([0, 1, 0.5, 0.5]) == pytest.approx(math.sqrt(0.5 / 3) / 2, rel=1e-12)
    hits = [1, 1, 1, 0, 0, 0, 0, 0]
    assert ss.average_at_k_se(hits) == pytest.approx(ss.accuracy_se(3 / 8, 8) * math.sqrt(8 / 7), rel=1e-12)
    with pytest.raises(ValueError, match="p must be in"):
        ss.accuracy_se(1.5, 10)


# --------------------------------------------------------------------------------------------- verdicts


def diff(t_ci, boot_ci, n=5, sd=0.01, level=0.95):
    return ss.PairedDiff(n, (t_ci[0] + t_ci[1]) / 2, sd, sd / math.sqrt(n), t_ci, boot_ci, level)


@pytest.mark.parametrize(
    ("rule", "margin", "ci", "outcome"),
    [
        ("a_gt_b", 0.0, (0.005, 0.03), "supported"),
        ("a_gt_b", 0.0, (-0.03, -0.005), "not supported"),
        ("a_gt_b", 0.0, (-0.01, 0.03), "inconclusive"),
        ("a_gt_b", 0.01, (0.005, 0.03), "inconclusive"),  # above 0 but not above the margin
        ("a_ge_b", 0.01, (-0.005, 0.02), "supported"),
        ("a_ge_b", 0.01, (-0.04, -0.02), "not supported"),
        ("a_ge_b", 0.01, (-0.02, 0.01), "inconclusive"),
        ("equivalent", 0.01, (-0.005, 0.008), "supported"),
        ("equivalent", 0.01, (0.015, 0.04), "not supported"),
        ("equivalent", 0.01, (-0.04, -0.015), "not supported"),
        ("equivalent", 0.01, (-0.005, 0.02), "inconclusive"),
    ],
)
def test_each_rule_on_constructed_cis(rule, margin, ci, outcome):
    c = ss.Criterion("claim", "adaptive", "fixed-1", rule, margin)
    assert ss.judge(c, diff(ci, ci)).outcome == outcome


def test_the_verdict_needs_both_intervals():
    """The t-CI clears the margin, the bootstrap CI does not: the envelope straddles → inconclusive."""
    c = ss.Criterion("adaptive beats OPSD", "adaptive", "fixed-1", "a_gt_b", 0.0)
    assert ss.judge(c, diff((0.002, 0.03), (0.002, 0.03))).outcome == "supported"
    assert ss.judge(c, diff((0.002, 0.03), (-0.001, 0.028))).outcome == "inconclusive"


def test_verdict_text_states_the_cis_and_the_mde():
    """n = 5, SD 0.01: MDE = (t_{0.975, 4} + t_{0.8, 4})·0.01/√5."""
    c = ss.Criterion("adaptive beats OPSD", "adaptive", "fixed-1", "a_gt_b", 0.0)
    v = ss.judge(c, diff((0.0051, 0.0302), (0.0072, 0.0281)))
    mde = (ss.t_quantile(0.975, 4) + ss.t_quantile(0.8, 4)) * 0.01 / math.sqrt(5)
    for part in (
        "95% CI t [+0.0051, +0.0302]",
        "bootstrap [+0.0072, +0.0281]",
        "judged on [+0.0051, +0.0302]",
    ):
        assert part in v.text
    assert f"minimum detectable effect {mde:.4f}" in v.text
    assert "over 5 paired seeds" in v.text


def test_render_verdicts_prints_criteria_with_results():
    verdicts = [
        ss.judge(
            ss.Criterion("a | b", "adaptive", "fixed-1", "a_gt_b", 0.0), diff((0.01, 0.02), (0.01, 0.02))
        ),
        ss.judge(
            ss.Criterion("same", "fixed-0.5", "fixed-1", "equivalent", 0.02),
            diff((-0.03, 0.01), (-0.03, 0.01)),
        ),
    ]
    lines = ss.render_verdicts(verdicts).splitlines()
    assert lines[0] == "| claim | criterion | outcome | evidence |"
    assert len(lines) == 4
    assert lines[2].startswith("| a \\| b | adaptive − fixed-1 > +0.000 | **supported** | adaptive − fixed-1")
    assert "| \\|fixed-0.5 − fixed-1\\| < 0.020 (equivalent) | **inconclusive** |" in lines[3]
    assert all(len(re.split(r"(?<!\\)\|", line)) == 4 + 2 for line in lines)  # 4 cells: no stray pipe


# ----------------------------------------------------------------------------------------- criteria files

GOOD = {
    "claim": "adaptive beats OPSD",
    "arm_a": "adaptive",
    "arm_b": "fixed-1",
    "rule": "a_gt_b",
    "margin": 0,
}


def test_load_criteria_json_and_yaml(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps([GOOD]))
    (tmp_path / "c.yaml").write_text(
        "- claim: fixed 0.5 is no worse than OPSD\n  arm_a: fixed-0.5\n  arm_b: fixed-1\n"
        "  rule: a_ge_b\n  margin: 0.01\n"
    )
    assert ss.load_criteria(tmp_path / "c.json") == [ss.Criterion(**GOOD)]
    assert ss.load_criteria(tmp_path / "c.yaml") == [
        ss.Criterion("fixed 0.5 is no worse than OPSD", "fixed-0.5", "fixed-1", "a_ge_b", 0.01)
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "rule"}, "row 2: missing field 'rule'"),
        ({**GOOD, "marginn": 0.1}, "row 2: unknown field 'marginn'"),
        ({**GOOD, "rule": "a>b"}, "row 2: field 'rule': 'a>b' is not one of a_gt_b, a_ge_b, equivalent"),
        ({**GOOD, "margin": "0.01"}, "row 2: field 'margin': '0.01' is not a finite number"),
        ({**GOOD, "margin": -0.01}, "row 2: field 'margin': -0.01"),
        ({**GOOD, "rule": "equivalent"}, "row 2: field 'margin': rule 'equivalent' needs a margin > 0"),
        ({**GOOD, "arm_b": ""}, "row 2: field 'arm_b'"),
    ],
)
def test_load_criteria_errors_name_row_and_field(tmp_path, row, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([GOOD, row]))
    with pytest.raises(ValueError, match=f"c.json: {message}".replace("(", r"\(")):
        ss.load_criteria(path)


def test_load_criteria_runs_no_code(tmp_path):
    """A YAML tag that would call a function is refused by the safe loader, and nothing ran."""
    import yaml

    marker = tmp_path / "ran"
    path = tmp_path / "c.yaml"
    path.write_text(f"- !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    with pytest.raises(yaml.constructor.ConstructorError):
        ss.load_criteria(path)
    assert not marker.exists()
    path.write_text("claim: not a list\n")
    with pytest.raises(ValueError, match="expected a non-empty list of criteria, got dict"):
        ss.load_criteria(path)


def test_report_from_results_rows_and_criteria(tmp_path, capsys):
    """The CLI's report on synthetic results.json rows: a = b + 0.05 + noise over 6 seeds (known mean difference,
    SD(d) of the noise), an unfinished row left out, an unknown arm in a criterion named."""
    noise = [0.01, -0.01, 0.02, -0.02, 0.0, 0.0]
    rows = [{"method": "b", "seed": s, "status": "done", "acc_after": 0.6 + 0.01 * s} for s in range(6)]
    rows += [
        {"method": "a", "seed": s, "status": "done", "acc_after": 0.65 + 0.01 * s + noise[s]}
        for s in range(6)
    ]
    rows.append({"method": "a", "seed": 9, "status": "incomplete", "acc_after": None})
    criteria = [ss.Criterion("a beats b", "a", "b", "a_gt_b", 0.0)]
    text = ss.report(rows, criteria)
    sd = statistics.stdev(noise)
    assert f"| a | 6 | {statistics.fmean(0.65 + 0.01 * s + noise[s] for s in range(6)):.4f} |" in text
    assert "**supported**" in text and "+0.0500 over 6 paired seeds" in text
    assert f"| a − b | 6 | {sd:.4f} | {ss.seeds_needed(sd, 0.01)} | {ss.seeds_needed(sd, 0.02)} |" in text
    with pytest.raises(ValueError, match=r"no finished runs of \['c'\]"):
        ss.report(rows, [ss.Criterion("c beats b", "c", "b", "a_gt_b", 0.0)])
    with pytest.raises(ValueError, match="a seed 0 appears twice"):
        ss.values_by_arm([*rows, rows[6]], "acc_after")
    (tmp_path / "results.json").write_text(json.dumps(rows))
    (tmp_path / "criteria.yaml").write_text(
        "- {claim: a beats b, arm_a: a, arm_b: b, rule: a_gt_b, margin: 0}\n"
    )
    ss.main([str(tmp_path / "results.json"), str(tmp_path / "criteria.yaml")])
    assert capsys.readouterr().out == text
