"""The PNG plots of the toy-world reproduction report (recipe/atesd/tools/repro_report.py), drawn from its
results.json rows only (:func:`draw`), and the summaries the plots and the report's tables share
(:func:`mean_std`, :func:`difficulty_table`).

The batch-level ``adaptive`` arm has its own plots (α and Beta mean per decision, Beta density, controller
rewards); the per-difficulty arm (``mode`` ``adaptive_per_difficulty``, issue 14, docs/method.md §2.4) has the
plot of its α per bucket over hold windows. The row selections are recipe/atesd/tools/repro_rows.py's.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib import colormaps

from recipe.atesd.tools.repro_rows import adaptive_rows, done_rows, per_difficulty_rows
from recipe.atesd.tools.run_report import _figure, _save, beta_pdf
from recipe.atesd.tools.sweep_plans import FIXED_ALPHAS, METHODS

PLOTS = {
    "accuracy_vs_alpha.png": "held-out accuracy after training vs fixed α (claim b), other methods as lines",
    "kl_vs_alpha.png": "KL(p_T ‖ p_S) vs fixed α, step 1 and mean over training (claim a)",
    "accuracy_by_method.png": "held-out accuracy after training per method, mean ± std over seeds (claim c)",
    "accuracy_by_difficulty.png": "held-out accuracy after training per difficulty, mean over seeds",
    "accuracy_curves.png": "held-out accuracy over steps, mean over seeds per method",
    "adaptive_alpha.png": "adaptive: α per hold window and the Beta mean per decision, each seed",
    "adaptive_beta_density.png": "adaptive: the Beta policy's density at each decision, each seed",
    "controller_rewards.png": "adaptive: controller reward per update, each seed",
    "per_difficulty_alpha.png": "adaptive_per_difficulty: α per bucket per hold window, each seed",
}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def difficulty_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """method → difficulty → mean ``acc_by_difficulty_after`` over finished seeds (+ ``before`` from any run)."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in done_rows(rows):
        for name, key in (("before", "acc_by_difficulty_before"), (r["method"], "acc_by_difficulty_after")):
            for k, v in (r[key] or {}).items():
                out.setdefault(name, {}).setdefault(k, []).append(v)
    order = ["before", *METHODS]
    return {m: {k: statistics.fmean(v) for k, v in out[m].items()} for m in order if m in out}


# ---------------------------------------------------------------------------------------------- plots


def _by_method(rows: list[dict], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in done_rows(rows):
        if r[key] is not None:
            out.setdefault(r["method"], []).append((r["seed"], r[key]))
    return out


def plot_accuracy_vs_alpha(rows: list[dict], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    acc = _by_method(rows, "acc_after")
    xs = [a for a in FIXED_ALPHAS if f"fixed-{a:g}" in acc]
    for a in xs:
        pts = acc[f"fixed-{a:g}"]
        ax.plot([a] * len(pts), [v for _, v in pts], "o", color="C0", alpha=0.5)
    if xs:
        stats = [mean_std([v for _, v in acc[f"fixed-{a:g}"]]) for a in xs]
        ax.errorbar(
            xs, [m for m, _ in stats], [s or 0 for _, s in stats], color="C0", capsize=3, label="fixed α"
        )
    for n, method in enumerate(("adaptive", "adaptive_per_difficulty", "random", "grpo"), 1):
        if method in acc:
            m, s = mean_std([v for _, v in acc[method]])
            ax.axhline(m, color=f"C{n}", label=f"{method} (mean ± std)")
            if s:
                ax.axhspan(m - s, m + s, color=f"C{n}", alpha=0.12)
    before = [r["acc_before"] for r in done_rows(rows) if r["acc_before"] is not None]
    if before:
        ax.axhline(statistics.fmean(before), color="grey", linestyle="--", label="before training")
    ax.set(
        xlabel="fixed α (α = 1: OPSD)", ylabel="held-out accuracy (mean@1)", title="accuracy after training"
    )
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_kl_vs_alpha(rows: list[dict], path: Path) -> None:
    fig = _figure(9.0, 3.6)
    for n, key in enumerate(("kl_step1", "kl_mean_over_steps"), 1):
        ax = fig.add_subplot(1, 2, n)
        per_seed: dict[int, list[tuple[float, float]]] = {}
        for r in done_rows(rows):
            if r["mode"] == "fixed" and r[key] is not None:
                per_seed.setdefault(r["seed"], []).append((r["alpha"], r[key]))
        for k, (seed, pts) in enumerate(sorted(per_seed.items())):
            ax.plot(*zip(*sorted(pts), strict=True), "o-", color=f"C{k}", label=f"seed {seed}")
        ax.set(xlabel="fixed α", ylabel="distill/kl_mean", title="step 1" if n == 1 else "mean over training")
        if per_seed:
            ax.legend(fontsize=7)
    _save(fig, path)


def plot_accuracy_by_method(rows: list[dict], path: Path) -> None:
    fig = _figure(8.0, 3.6)
    ax = fig.add_subplot()
    acc = _by_method(rows, "acc_after")
    names = [m for m in METHODS if m in acc]
    for x, m in enumerate(names):
        vals = [v for _, v in acc[m]]
        mean, std = mean_std(vals)
        ax.bar(
            x,
            mean,
            yerr=std or 0,
            color={"adaptive": "C1", "adaptive_per_difficulty": "C2"}.get(m, "C0"),
            alpha=0.6,
            capsize=3,
        )
        ax.plot([x] * len(vals), vals, "k.", markersize=5)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set(ylabel="held-out accuracy (mean@1)", title="after training: mean ± std over seeds, dots = seeds")
    _save(fig, path)


def plot_accuracy_by_difficulty(rows: list[dict], path: Path) -> None:
    fig = _figure(8.0, 3.8)
    ax = fig.add_subplot()
    table = difficulty_table(rows)
    for n, (m, by_k) in enumerate(table.items()):
        ks = sorted(by_k, key=int)
        ax.plot([int(k) for k in ks], [by_k[k] for k in ks], "o-", color=f"C{n % 10}", label=m, markersize=3)
    ax.set(
        xlabel="difficulty (terms)", ylabel="accuracy", title="held-out accuracy per difficulty, seed mean"
    )
    ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


def plot_accuracy_curves(rows: list[dict], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for n, m in enumerate(m for m in METHODS if any(r["method"] == m and r["acc_curve"] for r in rows)):
        curves = [dict(map(tuple, r["acc_curve"])) for r in rows if r["method"] == m and r["acc_curve"]]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        ax.plot(
            steps, [statistics.fmean(c[s] for c in curves) for s in steps], "o-", color=f"C{n % 10}", label=m
        )
    ax.set(
        xlabel="step (0 = before training)", ylabel="held-out accuracy", title="held-out accuracy over steps"
    )
    ax.legend(fontsize=6, ncol=2)
    _save(fig, path)


def plot_adaptive_alpha(rows: list[dict], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for k, r in enumerate(adaptive_rows(rows)):
        alphas = r["alpha_per_window"]
        ax.step(
            range(len(alphas)), alphas, where="mid", color=f"C{k}", alpha=0.5, label=f"seed {r['seed']}: α"
        )
        means = r["beta_mean_per_decision"]
        ax.plot(
            range(len(means)), means, "o-", color=f"C{k}", markersize=3, label=f"seed {r['seed']}: Beta mean"
        )
    ax.set(xlabel="decision (hold window)", ylabel="α", ylim=(-0.02, 1.02), title="adaptive: α and Beta mean")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_adaptive_beta(rows: list[dict], path: Path) -> None:
    runs = [r for r in adaptive_rows(rows) if r["beta_ab_per_decision"]]
    fig = _figure(3.2 * len(runs) + 1.0, 3.2)
    xs = [(i + 0.5) / 200 for i in range(200)]
    for n, r in enumerate(runs, 1):
        ax = fig.add_subplot(1, len(runs), n)
        last = max(len(r["beta_ab_per_decision"]) - 1, 1)
        for d, (a, b) in enumerate(r["beta_ab_per_decision"]):
            ax.plot(xs, [beta_pdf(x, a, b) for x in xs], color=colormaps["viridis"](d / last), linewidth=0.8)
        ax.set(xlabel="α", title=f"seed {r['seed']} (dark → light: decision)")
    _save(fig, path)


def plot_controller_rewards(rows: list[dict], path: Path) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for k, r in enumerate(adaptive_rows(rows)):
        if r["controller_reward"]:
            ax.plot(
                *zip(*r["controller_reward"], strict=True), "o-", color=f"C{k}", label=f"seed {r['seed']}"
            )
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(xlabel="step", ylabel="controller/reward", title="controller reward R = G_lp + λ_gt·G_gt")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_per_difficulty_alpha(rows: list[dict], path: Path) -> None:
    """A grid, one row per bucket and one column per seed: the bucket's α per hold window, and the same
    seed's batch-level adaptive α per window (dashed) for reference."""
    runs = per_difficulty_rows(rows)
    batch = {r["seed"]: r["alpha_per_window"] for r in adaptive_rows(rows)}
    k_count = max(len(r["alpha_per_bucket_per_window"][0]) for r in runs)
    fig = _figure(3.4 * len(runs) + 0.6, 1.8 * k_count + 0.6)
    for col, r in enumerate(runs):
        per_window = r["alpha_per_bucket_per_window"]
        for k in range(len(per_window[0])):
            ax = fig.add_subplot(k_count, len(runs), k * len(runs) + col + 1)
            alphas = [w[k] for w in per_window]
            ax.step(
                range(len(alphas)),
                alphas,
                "o-",
                where="mid",
                color=f"C{k}",
                markersize=3,
                label=f"bucket {k}",
            )
            if r["seed"] in batch:
                alphas = batch[r["seed"]]
                ax.step(
                    range(len(alphas)),
                    alphas,
                    "--",
                    where="mid",
                    color="grey",
                    linewidth=0.8,
                    label="adaptive",
                )
            ax.set(ylim=(-0.02, 1.02), ylabel="α")
            ax.set_title(f"seed {r['seed']}, bucket {k}" + (" (easiest)" if k == 0 else ""), fontsize=8)
            if k == len(per_window[0]) - 1:
                ax.set_xlabel("decision (hold window)")
            ax.legend(fontsize=6, loc="lower right")
    _save(fig, path)


def draw(rows: list[dict], folder: Path) -> dict[str, str | None]:
    """Draw each plot with data; name → None when drawn, else why not."""
    have = {
        "accuracy_vs_alpha.png": any(
            r["mode"] == "fixed" and r["acc_after"] is not None for r in done_rows(rows)
        ),
        "kl_vs_alpha.png": any(r["mode"] == "fixed" and r["kl_step1"] is not None for r in done_rows(rows)),
        "accuracy_by_method.png": any(r["acc_after"] is not None for r in done_rows(rows)),
        "accuracy_by_difficulty.png": bool(difficulty_table(rows)),
        "accuracy_curves.png": any(r["acc_curve"] for r in rows),
        "adaptive_alpha.png": bool(adaptive_rows(rows)),
        "adaptive_beta_density.png": any(r["beta_ab_per_decision"] for r in adaptive_rows(rows)),
        "controller_rewards.png": any(r["controller_reward"] for r in adaptive_rows(rows)),
        "per_difficulty_alpha.png": bool(per_difficulty_rows(rows)),
    }
    plot = {
        "accuracy_vs_alpha.png": plot_accuracy_vs_alpha,
        "kl_vs_alpha.png": plot_kl_vs_alpha,
        "accuracy_by_method.png": plot_accuracy_by_method,
        "accuracy_by_difficulty.png": plot_accuracy_by_difficulty,
        "accuracy_curves.png": plot_accuracy_curves,
        "adaptive_alpha.png": plot_adaptive_alpha,
        "adaptive_beta_density.png": plot_adaptive_beta,
        "controller_rewards.png": plot_controller_rewards,
        "per_difficulty_alpha.png": plot_per_difficulty_alpha,
    }
    out = {}
    for name, ok in have.items():
        stale = folder / name
        if ok:
            plot[name](rows, stale)
            out[name] = None
        else:
            stale.unlink(missing_ok=True)  # a plot of an earlier sweep must not stay next to this report
            out[name] = "no finished run has the data yet"
    return out
