"""The toy-world reproduction report (issue 13): ``python -m recipe.atesd.tools.repro_report RECORDS --out MD``.

Reads every run directory of the sweep (recipe/atesd/tools/repro_sweep.py: ``ROOT/<method>/seed<s>/``) from
RECORDS, the sweep directory ROOT or its archive (recipe/atesd/tools/repro_archive.py; default
docs/toy-reproduction/runs.tar.xz, the records of the committed report), and writes, next to ``MD`` (default
docs/toy-reproduction.md), the folder ``<MD without .md>/`` with

- ``results.json``: one row per run (recipe/atesd/tools/repro_rows.py ``run_row``), every run listed, finished or not;
- PNG plots (``PLOTS``), drawn from those rows only by recipe/atesd/tools/repro_plots.py;

and ``MD`` itself: what was run, the wall-time split, the tables, the claims with their stated criterion
(recipe/atesd/tools/repro_claims.py: ``claim_a``, ``claim_b``, ``claim_c``), the per-difficulty exposure arm of
issue 14 against batch-level adaptive, OPSD and the best fixed α (its ``per_difficulty``) and the reading, which is the text
of ``<MD without .md>/reading.md`` (written by hand; kept across regenerations) or a placeholder.

Definitions (docs/metrics.md): accuracy is verl's greedy ``val-core/<data_source>/acc/mean@1`` on the held-out
split (k = 1), ``acc_before`` at step 0, ``acc_after`` at the last step; KL is ``distill/kl_mean``, the
token mean of the forward KL(p_T ‖ p_S) on the student's rollouts, ``kl_step1`` at step 1 (rollouts of
the initial weights, before any update), ``kl_mean_over_steps`` its mean over the training steps. Accuracy per
difficulty is read from the validation generations verl dumps (``trainer.validation_data_dir``): each dumped
prompt contains exactly one problem of the held-out file, whose ``extra_info.difficulty`` it takes.
Wall time per run (``done.json``) splits into the training steps (Σ ``timing_s/step``), the validations
after step 0 (Σ ``timing_s/testing``) and the rest ("outside the steps": Ray, vLLM and model start-up, the
step-0 validation and shutdown).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from recipe.atesd.tools.repro_archive import read_records
from recipe.atesd.tools.repro_claims import (
    NOISE,
    claim_a,
    claim_b,
    claim_c,
    finished_values,
    per_difficulty,
    same_rollouts,
)
from recipe.atesd.tools.repro_plots import PLOTS, difficulty_table, draw, mean_std
from recipe.atesd.tools.repro_rows import (
    PER_BUCKET_MODE,
    ROLLOUT,
    adaptive_rows,
    done_rows,
    load_difficulties,
    one_model,
    per_difficulty_rows,
)
from recipe.atesd.tools.run_report import _table
from recipe.atesd.tools.study_stats import accuracy_se
from recipe.atesd.tools.sweep_plans import (
    CONTROLLER,
    METHODS,
    PER_DIFFICULTY,
)

# ---------------------------------------------------------------------------------------------- report


def _f(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _figure_md(name: str, why: str | None, rel: str) -> list[str]:
    """Markdown lines for one plot: the image (``why`` None: it was drawn) or why it was not, then a blank."""
    return [f"![{PLOTS[name]}]({rel}/{name})" if why is None else f"*Not drawn: {name} ({why}).*", ""]


def provenance_lines(rows: list[dict]) -> list[str]:
    """Where the runs were made (a run's ``record.json``): the code commits (dirty: with uncommitted changes)
    and CPUs, each with its runs' count, and the runs without a record; more than one is said, never pooled
    silently."""
    if not rows:
        return []
    groups: dict[tuple, int] = {}
    for r in rows:
        if (r["commit"], r["dirty"], r["cpu"]) != (None, None, None):
            key = (r["commit"], r["dirty"], r["cpu"])
            groups[key] = groups.get(key, 0) + 1
    if not groups:
        return [
            "- Code and machine: **not recorded** (runs made before the sweep arms' `record.json`, issue 28)."
        ]
    parts = [
        f"{n} run(s) at `{(c or 'not recorded')[:12]}`{' (dirty)' if d else ''} on {cpu or 'not recorded'}"
        for (c, d, cpu), n in groups.items()
    ]
    unrecorded = len(rows) - sum(groups.values())
    if unrecorded:
        parts.append(
            f"{unrecorded} run(s) without a record (not started yet, or made before records were written)"
        )
    head = "- Code and machine" + (
        " (**they differ between runs**: read the comparisons with that in mind)" if len(groups) > 1 else ""
    )
    return [f"{head}: " + "; ".join(parts) + "."]


def _acc(p, n) -> str:
    """An accuracy with its per-run SE over the n held-out problems (recipe/atesd/tools/study_stats.py)."""
    if p is None:
        return "–"
    return f"{_f(p)} ± {accuracy_se(p, n):.3f}" if n else _f(p)


def _per_difficulty_md(rows: list[dict], drawn: dict, rel: str) -> list[str]:
    """The section "Exposure per difficulty (issue 14)": what the arm is, its results.json fields, the table
    of :func:`per_difficulty`, a reading generated from those numbers only, per-seed lines and the plot."""
    p = per_difficulty(rows)
    md = [
        "## Exposure per difficulty (issue 14)",
        "",
        f"`{PER_BUCKET_MODE}` is `adaptive` with `{' '.join(PER_DIFFICULTY)}` (docs/method.md §2.4): quantile "
        "buckets of the training rows' `extra_info.difficulty` (bucket 0 the easiest), one α per bucket per hold "
        "window, drawn from one Beta per bucket and learned from the joint decision's reward; everything else "
        "(controller settings, data order, step budget) as `adaptive`. Its `exposure/alpha` (`alpha_per_window`) "
        "is the mean of its bucket α's. Only α per bucket is logged, not the per-bucket Beta parameters "
        "(`exposure/beta_a`, `exposure/beta_b` are NaN for more than one bucket: recipe/atesd/glue/trainer.py), "
        "so this arm has no Beta mean per decision. Its results.json rows add `alpha_per_bucket_per_window` "
        "([α_0, …, α_{K−1}] per hold window) and, per bucket, the mean over the training steps of "
        "`exposure/occupancy_bucket_k`, `exposure/accuracy_bucket_k` (task reward of the bucket's training "
        "rollouts) and `distill/kl_mean_bucket_k` (`occupancy_per_bucket`, `train_accuracy_per_bucket`, "
        "`kl_mean_per_bucket`); every other row has `[]` in these fields.",
        "",
    ]
    arms = {name: arm for name, arm in p["arms"].items() if arm["acc_after"]}
    if PER_BUCKET_MODE not in arms:
        return [
            *md,
            f"No finished `{PER_BUCKET_MODE}` run yet.",
            "",
            *_figure_md("per_difficulty_alpha.png", drawn["per_difficulty_alpha.png"], rel),
        ]
    levels = sorted({k for a in arms.values() for w in a["levels"].values() for k in w}, key=int)
    labels = {
        PER_BUCKET_MODE: "per-bucket adaptive",
        "adaptive": "batch-level adaptive",
        "fixed-1": "OPSD (α = 1)" + (", best fixed α" if p["best_fixed"] == "fixed-1" else ""),
    }
    body = []
    for name, arm in arms.items():
        mean, std = mean_std(arm["acc_after"])
        label = f"{labels.get(name, 'best fixed α')} (`{name}`)"
        cells = [
            f"{_f(arm['levels']['before'].get(k), 3)} → {_f(arm['levels']['after'].get(k), 3)}"
            for k in levels
        ]
        body.append([label, str(len(arm["acc_after"])), _f(mean), _f(std), *cells])
    md += [
        "Held-out accuracy after training (mean, sample std over the finished seeds, n) and per difficulty level, "
        "seed mean before → after training:"
    ]
    md += _table(["arm", "n", "acc after mean", "std", *(f"level {k}" for k in levels)], body)
    md += _table(
        [f"{PER_BUCKET_MODE} vs", "Δ mean acc", "SE", "above, beyond noise", "below, beyond noise"],
        [
            [name, _f(up["delta"]), _f(up["se"]), _beyond(up["beyond"]), _beyond(down["beyond"])]
            for name, (up, down) in p["comparisons"].items()
        ],
    )
    md += [_per_difficulty_reading(p), ""]
    for r in per_difficulty_rows(rows):
        per_window = r["alpha_per_bucket_per_window"]
        md.append(
            f"- seed {r['seed']} ({r['status']}): {len(per_window)} windows; α per bucket, first window "
            f"{_list(per_window[0])}, last {_list(per_window[-1])}, mean over windows "
            f"{_list([statistics.fmean(w[k] for w in per_window) for k in range(len(per_window[0]))])}; per bucket "
            f"over the training steps: occupancy {_list(r['occupancy_per_bucket'])}, training-rollout accuracy "
            f"{_list(r['train_accuracy_per_bucket'])}, `distill/kl_mean` {_list(r['kl_mean_per_bucket'])}."
        )
    md.append("")
    return md + _figure_md("per_difficulty_alpha.png", drawn["per_difficulty_alpha.png"], rel)


def _per_difficulty_reading(p: dict) -> str:
    """One paragraph from :func:`per_difficulty`'s numbers only: per-bucket adaptive against each other arm,
    and the easiest bucket's α against the hardest's per seed, each placed by :func:`_direction`."""
    words = {
        "above": "above it beyond noise",
        "below": "below it beyond noise",
        "within": "within noise of it",
        None: "not evaluable (fewer than 2 finished seeds on a side)",
    }
    parts = []
    for name, (up, down) in p["comparisons"].items():
        se = f", {NOISE:g}·SE = {NOISE * up['se']:.4f}" if up["se"] is not None else ""
        parts.append(f"`{name}`: Δ = {up['delta']:+.4f}{se}, {words[_direction(up, down)]}")
    seeds = {d: [s for s, pair in p["easy_vs_hard"].items() if _direction(*pair) == d] for d in words}
    return (
        "Reading (generated from the numbers above): per-bucket adaptive's mean held-out accuracy against "
        + ("; ".join(parts) or "no other arm with a finished run")
        + ". Over the hold windows (as samples), the easiest bucket's mean α is above the hardest's beyond noise "
        f"in seeds {seeds['above']}, below it beyond noise in seeds {seeds['below']}, within noise in seeds "
        f"{seeds['within']} (finished runs; the papers' sweep has easy problems preferring more exposure)."
    )


def _direction(up: dict, down: dict) -> str | None:
    """a against b from :func:`compare` (a, b) and (b, a): "above" / "below" beyond noise, "within" noise, or
    None when a side has fewer than 2 values."""
    if up["beyond"] is None:
        return None
    return "above" if up["beyond"] else "below" if down["beyond"] else "within"


def _list(values: list[float | None]) -> str:
    return "[" + ", ".join(_f(v, 3) for v in values) + "]"


def _beyond(flag: bool | None) -> str:
    return "n/a (< 2 seeds)" if flag is None else ("yes" if flag else "no")


def _verdict(holds: bool | None) -> str:
    return {True: "**reproduces**", False: "**does not reproduce**", None: "**not evaluable yet**"}[holds]


def render(
    rows: list[dict],
    aside: list[Path],
    folder: Path,
    reading: str | None,
    drawn: dict,
    n_val: int | None = None,
) -> str:
    """The markdown of the report (figures referenced as ``<folder name>/<png>``)."""
    rel = folder.name
    done = done_rows(rows)
    budgets = sorted({r["steps_budget"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    acc_keys = sorted({r["acc_key"] for r in rows if r["acc_key"]})
    md = [
        "# Toy-world reproduction of the ATESD claims (issue 13)",
        "",
        "Generated by `make reproduce-toy` (`python -m recipe.atesd.tools.repro_sweep`, then `python -m "
        "recipe.atesd.tools.repro_report`); do not edit by hand except the reading, which lives in "
        f"`{rel}/reading.md`. Every run found is listed; `{rel}/results.json` has one row per run.",
        "",
        *(
            ["**No run yet**: `make reproduce-toy` (docs/toy.md) runs the sweep and rewrites this file.", ""]
            if not rows
            else []
        ),
        "## What was run",
        "",
        *(
            [
                f"- Model: `{rows[0]['model_sha256']}` (the model hash every run recorded, "
                "recipe/atesd/data/manifest.py)."
                if rows[0]["model_sha256"]
                else "- Model: **not recorded** — these runs predate the model hash in `run.json` (issue 26); "
                "the weights they used are not tied to them, so they cannot be regenerated as they were."
            ]
            if rows
            else []
        ),
        *provenance_lines(rows),
        f"- {len(rows)} run directories ({len(done)} finished), methods "
        + (", ".join(f"`{m}`" for m in METHODS if any(r["method"] == m for r in rows)) or "none")
        + f"; seeds {seeds}; step budget {budgets} per run (the same for every method).",
        "- ATESD modes: `recipe.atesd.main_atesd +world=toy controller.exposure_mode=fixed|random|adaptive` "
        "(`controller.alpha` for fixed; α = 1 is OPSD) with the demo's controller settings "
        f"`{' '.join(CONTROLLER)}`; GRPO: "
        "`recipe.atesd.main_grpo +world=toy` (verl's GRPO with the group size and rollout settings of "
        "recipe/atesd/config/grpo_trainer.yaml).",
        "- Seed s sets `data.seed`, `actor_rollout_ref.rollout.seed` (and `controller_seed` for ATESD): for one "
        "seed every method trains on the same prompts in the same order, from the same initial weights.",
        f"- Accuracy: {', '.join(f'`{k}`' for k in acc_keys) or 'verl held-out accuracy'} — greedy decoding, "
        f"k = 1, on the held-out split ({n_val or 'data/toy/val.parquet'} problems, docs/toy.md); before = "
        "step 0, after = the last step.",
        "- KL: `distill/kl_mean`, the token mean of the forward KL(p_T ‖ p_S) on the student's rollouts; "
        "step 1 = rollouts of the initial weights on the same prompts for every α of a seed, and its mean "
        "over the training steps.",
    ]
    if aside:
        md += [
            f"- {len(aside)} incomplete attempt(s) were restarted from scratch and kept aside (not results): "
            + ", ".join(f"`{p}`" for p in aside)
        ]

    md += ["", "## Wall time", ""]
    timed = [r for r in done if r["wall_s"] is not None and r["steps_s"] is not None]
    if timed:
        total = sum(r["wall_s"] for r in timed)
        parts = {
            k: sum(r[k] for r in timed) for k in ("outside_steps_s", "first_step_s", "steps_s", "testing_s")
        }
        steady = parts["steps_s"] - parts["first_step_s"]
        n_steady = sum(max(r["steps"] - 1, 0) for r in timed)
        md += [
            f"{len(timed)} finished runs, {total / 60:.1f} min in all: outside the steps (start-up of Ray, vLLM "
            f"and the model, step-0 validation, shutdown) {parts['outside_steps_s'] / 60:.1f} min "
            f"({100 * parts['outside_steps_s'] / total:.0f} %), first steps (warm-up) {parts['first_step_s']:.0f} s, "
            f"the other {n_steady} steps {steady / 60:.1f} min ({steady / max(n_steady, 1):.2f} s/step), "
            f"validations after step 0 {parts['testing_s']:.0f} s.",
        ]
        md += _table(
            ["method", "seed", "wall s", "outside steps s", "first step s", "other steps s", "validations s"],
            [
                [
                    r["method"],
                    str(r["seed"]),
                    f"{r['wall_s']:.0f}",
                    f"{r['outside_steps_s']:.0f}",
                    f"{r['first_step_s']:.1f}",
                    f"{r['steps_s'] - r['first_step_s']:.1f}",
                    f"{r['testing_s']:.1f}",
                ]
                for r in timed
            ],
        )
    else:
        md += ["No finished run yet.", ""]

    md += [
        "## Every run",
        "",
        "Accuracies with their per-run standard error over the held-out problems, √(p(1 − p)/n) "
        "(`recipe/atesd/tools/study_stats.py::accuracy_se`; n = the rows of the run's step-0 validation dump): "
        "the noise of one run's reading, which differences between runs of one held-out set partly share.",
    ]
    md += _table(
        [
            "method",
            "seed",
            "status",
            "steps",
            "acc before",
            "acc after",
            "KL step 1",
            "KL mean",
            "probe NLL (last)",
            "α windows",
            "Beta mean first → last",
        ],
        [
            [
                r["method"],
                str(r["seed"]),
                r["status"],
                f"{r['steps']}/{r['steps_budget']}",
                _acc(r["acc_before"], r["val_rows"]),
                _acc(r["acc_after"], r["val_rows"]),
                _f(r["kl_step1"]),
                _f(r["kl_mean_over_steps"]),
                _f(r["probe_nll_final"]),
                str(len(r["alpha_per_window"])),
                (
                    f"{r['beta_mean_per_decision'][0]:.3f} → {r['beta_mean_per_decision'][-1]:.3f}"
                    if r["beta_mean_per_decision"]
                    else "–"
                ),
            ]
            for r in rows
        ],
    )

    md += ["## Per method (finished runs)"]
    body = []
    for m in METHODS:
        acc = finished_values(rows, m, "acc_after")
        if not acc:
            continue
        gain = [
            r["acc_after"] - r["acc_before"]
            for r in done_rows(rows)
            if r["method"] == m and r["acc_after"] is not None and r["acc_before"] is not None
        ]
        mean, std = mean_std(acc)
        mis = finished_values(rows, m, "kl_step1"), finished_values(rows, m, "kl_mean_over_steps")
        body.append(
            [
                m,
                str(len(acc)),
                _f(mean),
                _f(std),
                _f(statistics.fmean(gain)) if gain else "–",
                _f(statistics.fmean(mis[0])) if mis[0] else "–",
                _f(statistics.fmean(mis[1])) if mis[1] else "–",
            ]
        )
    md += _table(["method", "seeds", "acc after mean", "std", "gain mean", "KL step 1", "KL mean"], body)
    for name, why in drawn.items():
        if name in ("accuracy_by_method.png", "accuracy_curves.png"):
            md += _figure_md(name, why, rel)

    md += [
        "## Claims",
        "",
        f'Criterion for "beyond noise": a difference of seed means above {NOISE:g} standard '
        "errors, SE = sqrt(s_a²/n_a + s_b²/n_b) from the seed standard deviations (Welch); with 3 seeds this is "
        "a screen, not a test."
        + (f" One held-out problem is 1/{n_val} = {1 / n_val:.4f} of accuracy." if n_val else ""),
        "",
    ]
    md += ["### (a) KL(p_T ‖ p_S) grows monotonically with exposure", ""]
    for key in ("kl_step1", "kl_mean_over_steps"):
        a = claim_a(rows, key)
        md.append(
            f"- `{key}`: {_verdict(a['holds'])} — criterion: strictly increasing over α = 0, 0.25, 0.5, "
            f"0.75, 1 in every seed with all five fixed runs finished (seeds {a['seeds']})."
        )
        for seed, a0, a1, v0, v1 in a["violations"]:
            md.append(f"  - fails in seed {seed}: α {a0:g} → {a1:g}: {v0:.4f} → {v1:.4f}")
    paired = same_rollouts(rows)
    md.append(
        f"- Step-1 rollouts ({', '.join(f'`{k}`' for k in ROLLOUT)} at step 1) equal across the fixed α of "
        f"seeds {[s for s, same in paired.items() if same]} (the step-1 comparison is paired there: the same "
        f"samples scored by each α's teacher); they differ in seeds {[s for s, same in paired.items() if not same]}."
    )
    md += ["", *_figure_md("kl_vs_alpha.png", drawn["kl_vs_alpha.png"], rel)]

    b = claim_b(rows)
    md += [
        "### (b) full exposure is not reliably the best fixed choice",
        "",
        f"{_verdict(b['holds'])} — criterion: α = 1 is *reliably best* iff its mean accuracy after training "
        "exceeds every other fixed α's beyond noise; the claim reproduces iff it is not.",
    ]
    md += _table(
        ["α = 1 vs", "Δ mean acc", "SE", "beyond noise"],
        [
            [f"α = {a:g}", _f(c["delta"]), _f(c["se"]), _beyond(c["beyond"])]
            for a, c in b["comparisons"].items()
        ],
    )
    md += [
        "Best fixed α per seed: "
        + (
            "; ".join(f"seed {s}: {', '.join(f'{a:g}' for a in w)}" for s, w in b["winners_per_seed"].items())
            or "–"
        ),
        "",
    ]
    md += _figure_md("accuracy_vs_alpha.png", drawn["accuracy_vs_alpha.png"], rel)

    c = claim_c(rows)
    md += [
        "### (c) the learned controller beats fixed exposure",
        "",
        f"{_verdict(c['holds'])} — criterion: adaptive's mean accuracy after training exceeds the best fixed "
        f"α's (by mean: `{c['best_fixed']}`) beyond noise.",
    ]
    md += _table(
        ["adaptive vs", "Δ mean acc", "SE", "beyond noise"],
        [[m, _f(x["delta"]), _f(x["se"]), _beyond(x["beyond"])] for m, x in c["comparisons"].items()],
    )
    md += ["### The adaptive controller", ""]
    for r in adaptive_rows(rows):
        means = r["beta_mean_per_decision"]
        md.append(
            f"- seed {r['seed']}: {len(r['alpha_per_window'])} windows; Beta mean "
            + (
                f"{means[0]:.3f} → {means[-1]:.3f} (min {min(means):.3f}, max {max(means):.3f})"
                if means
                else "not logged"
            )
            + f"; {len(r['controller_reward'])} controller rewards logged."
        )
    md.append("")
    for name in ("adaptive_alpha.png", "adaptive_beta_density.png", "controller_rewards.png"):
        md += _figure_md(name, drawn[name], rel)

    md += ["## Accuracy per difficulty (after training, seed mean; before: the initial weights)", ""]
    table = difficulty_table(rows)
    if table:
        ks = sorted({k for v in table.values() for k in v}, key=int)
        md += _table(
            ["method", *(f"k={k}" for k in ks)],
            [[m, *(_f(v.get(k), 3) for k in ks)] for m, v in table.items()],
        )
        md += [f"![{PLOTS['accuracy_by_difficulty.png']}]({rel}/accuracy_by_difficulty.png)", ""]
        bad = [(r["method"], r["seed"], *m) for r in rows for m in r["dump_vs_logged"]]
        md += [
            "The dumped generations' mean score equals the logged accuracy at every step read."
            if not bad
            else "**The dumped generations do not match the logged accuracy** (method, seed, step, dumped, "
            f"logged): {bad}",
            "",
        ]
    else:
        md += ["No validation generations dumped by a finished run.", ""]

    md += _per_difficulty_md(rows, drawn, rel)

    md += [
        "## Reading",
        "",
        reading.strip() if reading else "*Not written yet* (`" + rel + "/reading.md`).",
        "",
    ]
    return "\n".join(md)


def write(records: str | Path, out: str | Path, val_file: str | Path | None) -> list[dict]:
    """Write ``out`` (markdown), ``<out stem>/results.json`` and the PNGs from ``records`` (a sweep directory
    or its archive, :func:`sweep_dir`); return the rows. The runs of an archive are named by their paths in it,
    in the rows, the markdown and the errors."""
    difficulties = load_difficulties(val_file) if val_file else None
    found = read_records(records, difficulties)
    rows, aside = found.rows, found.aside
    one_model(rows)  # before anything is written
    out = Path(out)
    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    drawn = draw(rows, folder)
    reading_file = folder / "reading.md"
    reading = reading_file.read_text(encoding="utf-8") if reading_file.exists() else None
    n_val = len(difficulties) if difficulties is not None else None
    out.write_text(render(rows, aside, folder, reading, drawn, n_val).rstrip() + "\n", encoding="utf-8")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "records",
        nargs="?",
        default="docs/toy-reproduction/runs.tar.xz",
        help="the sweep's --root or its archive (python -m recipe.atesd.tools.repro_archive)",
    )
    parser.add_argument("--out", default="docs/toy-reproduction.md", help="the markdown report")
    parser.add_argument(
        "--val-file",
        default="data/toy/val.parquet",
        help="held-out parquet (difficulty per problem); '' = none",
    )
    args = parser.parse_args(argv)
    try:
        rows = write(args.records, args.out, args.val_file or None)
    except (ValueError, OSError, KeyError) as err:
        sys.exit(f"repro_report: {err}")
    print(f"reproduction report: {args.out} ({len(rows)} runs, {len(done_rows(rows))} finished)")


if __name__ == "__main__":
    main()
