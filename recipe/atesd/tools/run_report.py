"""A run report for any ATESD run: ``python -m recipe.atesd.tools.run_report METRICS [--ckpt DIR] --out DIR``.

Reads verl's file-logger history (attempts and rows as recipe/atesd/tools/summarize.py reads them, boundary
records as recipe/atesd/tools/run_history.py writes them) and writes into ``--out`` the PNG plots below and
a one-page ``report.md`` that embeds them and states their numbers. Only keys documented in
docs/metrics.md are read (:data:`KEYS` and the ``val-core/<data_source>/acc/mean@k`` and ``timing_s/*``
families):

- ``alpha_windows.png``: α per hold window (``exposure/alpha``, ``exposure/window``; required: a history
  without them is an error naming the file, and the step where one is missing);
- ``beta_density.png``: the Beta policy's density Beta(α; a, b) at each decision (``exposure/beta_a``,
  ``exposure/beta_b`` on a window's first step; NaN or absent outside ``adaptive``: skipped, said in the md);
- ``controller_rewards.png``: ``controller/reward``, ``controller/return_lp``, ``controller/return_gt``
  at the steps where decisions' lookaheads completed, and the policy updates (steps with ``controller/loss``);
- ``training_curves.png``: ``distill/loss``, ``distill/kl_mean``, ``probe/nll``, ``probe/teacher_ground``;
- ``accuracy.png``: held-out ``val-core/<data_source>/acc/mean@k`` over steps (step 0 = before training);
- ``timing_shares.png``: each ``timing_s/*`` stage's mean share of ``timing_s/step`` over the steady steps.

An optional group that is absent gives a line in the md naming the skipped plot and why. A value that is
neither a number nor null (JSON null = NaN) is an error naming the file, the step and the key.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from recipe.atesd.tools.run_history import Attempt
from recipe.atesd.tools.summarize import (
    beta_mean,
    describe_attempts,
    latest_checkpoint,
    read_metrics,
    validations,
    windows,
)

ALPHA, WINDOW = "exposure/alpha", "exposure/window"
BETA_A, BETA_B = "exposure/beta_a", "exposure/beta_b"
REWARDS = ("controller/reward", "controller/return_lp", "controller/return_gt")
UPDATE = "controller/loss"  # logged at policy updates only
CURVES = ("distill/loss", "distill/kl_mean", "probe/nll", "probe/teacher_ground")
STEP_TIME = "timing_s/step"
KEYS = (ALPHA, WINDOW, BETA_A, BETA_B, *REWARDS, UPDATE, *CURVES, STEP_TIME)
# stages timed inside another stage (docs/metrics.md, "Timings"): their shares are part of the parent's
NESTED = {
    "timing_s/controller_decide": "timing_s/update_actor",
    "timing_s/exposure_broadcast": "timing_s/update_actor",
    "timing_s/distill_update": "timing_s/update_actor",
    "timing_s/probe": "timing_s/update_actor",
    "timing_s/controller_observe": "timing_s/update_actor",
    "timing_s/teacher": "timing_s/distill_update",
    "timing_s/distill_loss": "timing_s/distill_update",
    "timing_s/probe_nll": "timing_s/probe",
    "timing_s/probe_ground": "timing_s/probe",
}
PLOTS = {
    "alpha_windows.png": "α per hold window",
    "beta_density.png": "Beta policy density per decision",
    "controller_rewards.png": "controller rewards per decision",
    "training_curves.png": "loss, KL and probe NLL",
    "accuracy.png": "held-out accuracy",
    "timing_shares.png": "timing shares",
}


@dataclass
class Window:
    """One hold window: its α, first and last step, and the Beta(a, b) logged at its decision (NaN if none)."""

    number: int
    alpha: float
    first: int
    last: int
    a: float
    b: float
    mean: float | None  # a / (a + b); None outside adaptive


def value(row: dict, key: str, path: str | Path) -> float:
    """The number logged under ``key`` on ``row`` (JSON null → NaN); anything else is an error."""
    v = row[key]
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{path}: step {row['step']}: {key!r} is {v!r}, not a number")
    return float(v)


def series(rows: list[dict], key: str, path: str | Path) -> list[tuple[int, float]]:
    """(step, value) of the rows that log ``key`` with a finite value, in step order."""
    return [(r["step"], v) for r in rows if key in r and math.isfinite(v := value(r, key, path))]


def hold_windows(rows: list[dict], path: str | Path) -> list[Window]:
    """The hold windows of the training rows; every row must carry a finite α and its window id."""
    for r in rows:
        for key in (ALPHA, WINDOW):
            if key not in r:
                raise ValueError(f"{path}: step {r['step']}: missing {key!r} (required, docs/metrics.md)")
            if not math.isfinite(value(r, key, path)):
                raise ValueError(f"{path}: step {r['step']}: {key!r} is {r[key]!r}, not a finite number")
    by_step = {r["step"]: r for r in rows}
    out = []
    for number, alpha, steps in windows(rows):
        first = by_step[steps[0]]
        a, b = (value(first, k, path) if k in first else math.nan for k in (BETA_A, BETA_B))
        out.append(Window(number, alpha, steps[0], steps[-1], a, b, beta_mean(first)))
    return out


def beta_pdf(x: float, a: float, b: float) -> float:
    """Beta(x; a, b) = x^(a−1) (1−x)^(b−1) / B(a, b), B(a, b) = Γ(a) Γ(b) / Γ(a + b), for 0 < x < 1."""
    log_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_b)


def first_steps(rows: list[dict], attempts: list[Attempt]) -> set[int]:
    """The first step each attempt logged (the first step after its ``resumed_from_step``)."""
    steps = sorted(r["step"] for r in rows)
    return {
        next(s for s in steps if s > a.resumed_from_step) for a in attempts if steps[-1] > a.resumed_from_step
    }


def timing_shares(
    rows: list[dict], attempts: list[Attempt], path: str | Path
) -> tuple[list[int], dict[str, tuple[float, float]]]:
    """Steady steps S (those with ``timing_s/step`` > 0, without each attempt's first step: start-up) and,
    per ``timing_s/<stage>``, (mean share, mean seconds) over S:

        share_k = (1/|S|) Σ_{s∈S} t_k(s) / t_step(s),   seconds_k = (1/|S|) Σ_{s∈S} t_k(s),

    with t_k(s) = 0 on a step that did not run stage k (e.g. ``save_checkpoint``)."""
    skip = first_steps(rows, attempts)
    steady = [r for r in rows if r["step"] not in skip and STEP_TIME in r and value(r, STEP_TIME, path) > 0]
    stages = sorted({k for r in steady for k in r if k.startswith("timing_s/") and k != STEP_TIME})
    shares = {}
    for k in stages:
        times = [(value(r, k, path) if k in r else 0.0, value(r, STEP_TIME, path)) for r in steady]
        times = [(t if math.isfinite(t) else 0.0, total) for t, total in times]
        shares[k] = (
            sum(t / total for t, total in times) / len(steady),
            sum(t for t, _ in times) / len(steady),
        )
    return [r["step"] for r in steady], shares


# ---------------------------------------------------------------------------------------------- plots


def _figure(width: float = 7.0, height: float = 3.6) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _resumes(ax, attempts: list[Attempt]) -> None:
    for a in attempts:
        if a.resumed_from_step > 0:
            ax.axvline(a.resumed_from_step + 0.5, color="grey", linestyle=":", linewidth=1)


def plot_alpha(wins: list[Window], attempts: list[Attempt], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for w in wins:
        ax.hlines(w.alpha, w.first - 0.5, w.last + 0.5, color="C0", linewidth=2.5)
    means = [(w.first, w.mean) for w in wins if w.mean is not None]
    if means:
        ax.plot(*zip(*means, strict=True), "o", color="C1", label="Beta mean a/(a+b) at the decision")
        ax.legend(fontsize=8)
    _resumes(ax, attempts)
    ax.set(xlabel="step", ylabel="α", ylim=(-0.02, 1.02), title="α per hold window (dotted: resumed attempt)")
    _save(fig, path)


def plot_beta(wins: list[Window], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    xs = [(i + 0.5) / 200 for i in range(200)]
    last = max(max(w.number for w in wins), 1)
    for w in wins:
        ax.plot(xs, [beta_pdf(x, w.a, w.b) for x in xs], color=colormaps["viridis"](w.number / last))
    scale = ScalarMappable(cmap=colormaps["viridis"])
    scale.set_clim(0, last)
    fig.colorbar(scale, ax=ax, label="decision (hold window)")
    ax.set(xlabel="α", ylabel="density", title="Beta(a, b) of the policy at each decision")
    _save(fig, path)


def plot_rewards(rewards: dict[str, list[tuple[int, float]]], updates: list[int], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for n, (key, points) in enumerate(rewards.items()):
        ax.plot(*zip(*points, strict=True), "o-", color=f"C{n}", label=key)
    for n, step in enumerate(updates):
        ax.axvline(
            step, color="grey", linestyle="--", linewidth=0.8, label="policy update" if n == 0 else None
        )
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(xlabel="step (the decisions' lookahead completed)", ylabel="mean over decisions")
    ax.set_title("controller rewards R = G_lp + λ_gt·G_gt")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_curves(curves: dict[str, list[tuple[int, float]]], attempts: list[Attempt], path: Path) -> None:
    fig = _figure(8.0, 2.6 * math.ceil(len(curves) / 2))
    for n, (key, points) in enumerate(curves.items(), 1):
        ax = fig.add_subplot(math.ceil(len(curves) / 2), 2, n)
        ax.plot(*zip(*points, strict=True), ".-", color=f"C{n - 1}")
        _resumes(ax, attempts)
        ax.set(xlabel="step", title=key)
    _save(fig, path)


def plot_accuracy(accuracy: dict[str, list[tuple[int, float]]], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for key, points in accuracy.items():
        ax.plot(*zip(*points, strict=True), "o-", label=key)
    ax.set(
        xlabel="step (0 = before training)", ylabel="accuracy", ylim=(-0.02, 1.02), title="held-out accuracy"
    )
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_timing(shares: dict[str, tuple[float, float]], n_steady: int, path: Path) -> None:
    order = sorted(shares, key=lambda k: shares[k][0])
    fig = _figure(7.0, 1.0 + 0.3 * len(order))
    ax = fig.add_subplot()
    ax.barh(
        [_stage(k) for k in order],
        [100 * shares[k][0] for k in order],
        color=["C1" if k in NESTED else "C0" for k in order],
    )
    ax.set(xlabel=f"mean share of timing_s/step, % ({n_steady} steady steps)", title="timing shares")
    _save(fig, path)


def _stage(key: str) -> str:
    parent = NESTED.get(key)
    return f"{key.removeprefix('timing_s/')} (in {parent.removeprefix('timing_s/')})" if parent else key[9:]


# ---------------------------------------------------------------------------------------------- report


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _keys(keys) -> str:
    return ", ".join(f"`{k}`" for k in keys)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    """A markdown table between blank lines (a text line right after a table would join it)."""
    return [
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
        *("| " + " | ".join(r) + " |" for r in body),
        "",
    ]


def _by_step(points: dict[str, list[tuple[int, float]]], steps: list[int]) -> list[list[str]]:
    """One table row per step: the step, then each key's value there (– where not logged)."""
    values = {k: dict(pts) for k, pts in points.items()}
    return [[str(s), *(_fmt(v[s]) if s in v else "–" for v in values.values())] for s in steps]


def _skipped(name: str, why: str) -> list[str]:
    return [f"*Skipped `{name}` ({PLOTS[name]}): {why}.*"]


class _Writer:
    """Saves the plots into ``out`` and returns the markdown line that embeds each."""

    def __init__(self, out: Path):
        self.out, self.written = out, []

    def __call__(self, name: str, plot, *args) -> list[str]:
        plot(*args, self.out / name)
        self.written.append(name)
        return [f"![{PLOTS[name]}]({name})"]


def write_report(metrics: str | Path, out: str | Path, ckpt_dir: str | Path | None = None) -> list[str]:
    """Write the plots and ``report.md`` into ``out`` (created); return the names of the PNGs written."""
    rows, attempts = read_metrics(metrics)
    wins = hold_windows(rows, metrics)
    Path(out).mkdir(parents=True, exist_ok=True)
    save = _Writer(Path(out))
    adaptive = [w for w in wins if math.isfinite(w.a) and math.isfinite(w.b)]
    md = [
        f"# Run report: `{metrics}`",
        "",
        f"{len(rows)} training steps ({rows[0]['step']}–{rows[-1]['step']}), {len(wins)} hold windows; "
        + ("Beta policy logged (adaptive)." if adaptive else "no Beta policy logged (fixed or random α)."),
        "",
        *(f"- {line.strip()}" for line in describe_attempts(attempts)),
        *([f"- latest checkpoint: {latest_checkpoint(ckpt_dir)}"] if ckpt_dir else []),
    ]

    md += ["", "## α per hold window", "", *save("alpha_windows.png", plot_alpha, wins, attempts)]
    md += _table(
        ["window", "steps", "α", "Beta(a, b) at the decision", "Beta mean"],
        [
            [str(w.number), f"{w.first}–{w.last}", f"{w.alpha:.3f}"]
            + ([f"({w.a:.3f}, {w.b:.3f})", f"{w.mean:.3f}"] if w.mean is not None else ["–", "–"])
            for w in wins
        ],
    )

    md += ["## Beta policy per decision", ""]
    if adaptive:
        md += save("beta_density.png", plot_beta, adaptive)
        if len(adaptive) < len(wins):
            md += ["", f"({len(wins) - len(adaptive)} window(s) without finite Beta parameters not drawn.)"]
    else:
        md += _skipped(
            "beta_density.png",
            f"{_keys((BETA_A, BETA_B))} are NaN or absent in every window (the Beta policy is logged only in "
            "`adaptive` mode)",
        )

    md += ["", "## Controller rewards", ""]
    rewards = {k: pts for k in REWARDS if (pts := series(rows, k, metrics))}
    updates = [s for s, _ in series(rows, UPDATE, metrics)]
    if REWARDS[0] in rewards:
        md += save("controller_rewards.png", plot_rewards, rewards, updates)
        md += _table(
            ["step", *(f"`{k}`" for k in rewards)], _by_step(rewards, [s for s, _ in rewards[REWARDS[0]]])
        )
        if missing := [k for k in REWARDS if k not in rewards]:
            md += [f"Not logged: {_keys(missing)}.", ""]
    else:
        md += [
            *_skipped(
                "controller_rewards.png", f"no finite `{REWARDS[0]}` (no decision's lookahead completed)"
            ),
            "",
        ]
    md.append(f"Policy updates (steps with `{UPDATE}`): {', '.join(map(str, updates)) or 'none'}.")

    md += ["", "## Loss, KL and probe NLL", ""]
    curves = {k: pts for k in CURVES if (pts := series(rows, k, metrics))}
    if curves:
        md += save("training_curves.png", plot_curves, curves, attempts)
        md += _table(
            ["metric", "first", "last", "min", "steps"],
            [
                [f"`{k}`", _fmt(pts[0][1]), _fmt(pts[-1][1]), _fmt(min(v for _, v in pts)), str(len(pts))]
                for k, pts in curves.items()
            ],
        )
        if missing := [k for k in CURVES if k not in curves]:
            md += [f"Not logged: {_keys(missing)}.", ""]
    else:
        md += [*_skipped("training_curves.png", f"none of {_keys(CURVES)} is logged"), ""]

    md += ["## Held-out accuracy", ""]
    checked = [{"step": s, **acc} for s, acc in validations(metrics)]
    accuracy = {
        k: series(checked, k, metrics) for k in sorted({k for r in checked for k in r if k != "step"})
    }
    if accuracy:
        md += save("accuracy.png", plot_accuracy, accuracy)
        md += _table(
            ["step", *(f"`{k}`" for k in accuracy)], _by_step(accuracy, [r["step"] for r in checked])
        )
    else:
        md += [
            *_skipped("accuracy.png", "no `val-core/<data_source>/acc/mean@k` metrics (no validation ran)"),
            "",
        ]

    md += ["## Timing shares", ""]
    steady, shares = timing_shares(rows, attempts, metrics)
    if shares:
        md += [
            f"Mean share of `{STEP_TIME}` over {len(steady)} steady steps (each attempt's first step left out: "
            f"{', '.join(map(str, sorted(first_steps(rows, attempts))))}); a stage absent from a step counts 0 "
            "there; a nested stage is part of its parent's share; `testing` runs after the step.",
            "",
            *save("timing_shares.png", plot_timing, shares, len(steady)),
        ]
        md += _table(
            ["stage", "mean share", "mean s"],
            [
                [f"`{_stage(k)}`", f"{100 * v[0]:.1f} %", f"{v[1]:.3g}"]
                for k, v in sorted(shares.items(), key=lambda kv: -kv[1][0])
            ],
        )
    else:
        md += _skipped("timing_shares.png", f"no steady step (after each attempt's first) logs `{STEP_TIME}`")

    (Path(out) / "report.md").write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    return save.written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics", help="verl file-logger JSONL (the run's metrics history)")
    parser.add_argument("--ckpt", help="trainer.default_local_dir of the run (names the latest checkpoint)")
    parser.add_argument("--out", required=True, help="directory for report.md and the PNGs")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.metrics, args.out, args.ckpt)
    except (ValueError, OSError) as err:
        sys.exit(f"run_report: {err}")
    print(f"run report: {Path(args.out) / 'report.md'} ({', '.join(written)})")


if __name__ == "__main__":
    main()
