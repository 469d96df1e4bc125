"""Comparison table over methods and seeds from ``recipe.atesd.evaluate_run`` outputs (docs/evaluation.md).

``python -m recipe.atesd.table runs/eval [more dirs...] [--step N] [--out DIR]``

Each argument is a run folder written by ``evaluate_run`` (``run.json`` + ``step_N/summary.json``) or a folder
of them. A *score* is Average@k of one (method, seed, step, benchmark) (``summary.json`` ``mean@k``, k =
``n_samples``, the same for every run or an error). Two protocols, both reported:

- **fixed step** (the honest number): every method at one step S (``--step``; default the largest step every run
  has). Per method and benchmark: mean ± std over seeds of the score at S; *mean* column: per seed the mean over
  benchmarks, then mean ± std over seeds.
- **best checkpoint per benchmark** (the papers' protocol; OPSD's 4B numbers mix steps 25, 50, 75): per method
  and benchmark, the step whose seed-mean score is highest among the steps every seed of the method has; mean ±
  std over seeds at that step; *mean* column: per seed the mean over benchmarks of those (different) steps.

std is the sample standard deviation over seeds (ddof 1; "–" with one seed). The best-checkpoint number picks the
maximum of noisy estimates on the very problems it reports, so it is biased upwards even when no step is truly
better; the output states, per method, ``best − fixed`` of the mean column (the selection bias plus any real
gain from stopping earlier, which this protocol cannot tell apart).

Writes ``DIR/table.md`` (printed too), ``DIR/table.csv`` (one row per protocol, method, benchmark: step, mean,
std, n_seeds, per-seed scores) and ``DIR/curves.png`` (seed-mean ± std of each benchmark and of their mean vs
step, one line per method). Default ``DIR``: ``<first argument>/table``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

STEP_DIR = re.compile(r"^step_(\d+)$")
MEAN = "mean"  # the column of the per-seed mean over benchmarks


@dataclass(frozen=True)
class Score:
    method: str
    seed: int
    run: str
    step: int
    benchmark: str
    value: float  # Average@k in [0, 1]
    k: int


@dataclass(frozen=True)
class Cell:
    """One (protocol, method, benchmark) entry: ``values`` per seed, the step(s) they come from."""

    values: dict[int, float]
    steps: tuple[int, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values.values())

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """Folders holding ``run.json``: each path itself, or its subfolders."""
    found = []
    for path in map(Path, paths):
        if (path / "run.json").is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if (p / "run.json").is_file()))
        else:
            raise ValueError(f"{path}: no such folder")
    if not found:
        raise ValueError(
            f"no run.json in {', '.join(map(str, paths))} nor in their subfolders (evaluate_run writes it)"
        )
    return found


def read_scores(paths: list[str | Path]) -> list[Score]:
    """Every (run, step, benchmark) score under ``paths``; a step folder without summary.json is skipped with a
    note (an evaluation still running), a malformed run.json/summary.json is an error naming the file."""
    scores = []
    seen = {}
    for run in run_dirs(paths):
        meta = json.loads((run / "run.json").read_text())
        for key in ("name", "method", "seed"):
            if key not in meta:
                raise ValueError(f"{run / 'run.json'}: no '{key}'")
        ident = (meta["method"], int(meta["seed"]))
        if ident in seen:
            raise ValueError(f"{run} and {seen[ident]} are both method {ident[0]!r} seed {ident[1]}")
        seen[ident] = run
        for step_dir in sorted(run.iterdir()):
            m = STEP_DIR.match(step_dir.name)
            if not m or not step_dir.is_dir():
                continue
            path = step_dir / "summary.json"
            if not path.is_file():
                print(f"[table] {step_dir}: no summary.json yet, skipped")
                continue
            summary = json.loads(path.read_text())
            k = summary["n_samples"]
            for bench, stats in summary["benchmarks"].items():
                if f"mean@{k}" not in stats:
                    raise ValueError(f"{path}: benchmark '{bench}' has no 'mean@{k}'")
                scores.append(
                    Score(ident[0], ident[1], meta["name"], int(m.group(1)), bench, stats[f"mean@{k}"], k)
                )
    ks = {s.k for s in scores}
    if len(ks) > 1:
        per = sorted({(s.run, s.k) for s in scores})
        raise ValueError(
            f"runs were evaluated with different n_samples {sorted(ks)}: {per}; compare like with like"
        )
    if not scores:
        raise ValueError("no summary.json under the given runs")
    return scores


def _index(scores: list[Score]) -> dict:
    """``{method: {seed: {step: {benchmark: value}}}}``."""
    out: dict = {}
    for s in scores:
        out.setdefault(s.method, {}).setdefault(s.seed, {}).setdefault(s.step, {})[s.benchmark] = s.value
    return out


def benchmarks_of(scores: list[Score]) -> list[str]:
    return sorted({s.benchmark for s in scores})


def complete_steps(per_seed: dict[int, dict[int, dict[str, float]]], benches: list[str]) -> list[int]:
    """Steps at which every seed has every benchmark."""
    sets = [{step for step, b in steps.items() if set(benches) <= set(b)} for steps in per_seed.values()]
    return sorted(set.intersection(*sets)) if sets else []


def default_fixed_step(scores: list[Score]) -> int:
    """The largest step at which every run has every benchmark."""
    index, benches = _index(scores), benchmarks_of(scores)
    common = set.intersection(*(set(complete_steps(per_seed, benches)) for per_seed in index.values()))
    if not common:
        raise ValueError("no step is evaluated in every run; pass --step")
    return max(common)


def fixed_step_table(scores: list[Score], step: int) -> dict[str, dict[str, Cell]]:
    """``{method: {benchmark | "mean": Cell}}`` at ``step`` (module docstring, "fixed step")."""
    index, benches = _index(scores), benchmarks_of(scores)
    table = {}
    for method, per_seed in sorted(index.items()):
        missing = [seed for seed, steps in per_seed.items() if set(benches) - set(steps.get(step, {}))]
        if missing:
            raise ValueError(
                f"method {method!r}: seed(s) {missing} have no complete evaluation at step {step}"
            )
        row = {b: Cell({seed: steps[step][b] for seed, steps in per_seed.items()}, (step,)) for b in benches}
        row[MEAN] = Cell(
            {seed: statistics.fmean(steps[step][b] for b in benches) for seed, steps in per_seed.items()},
            (step,),
        )
        table[method] = row
    return table


def best_checkpoint_table(scores: list[Score]) -> dict[str, dict[str, Cell]]:
    """``{method: {benchmark | "mean": Cell}}``, each benchmark at its best seed-mean step (module docstring)."""
    index, benches = _index(scores), benchmarks_of(scores)
    table = {}
    for method, per_seed in sorted(index.items()):
        steps = complete_steps(per_seed, benches)
        if not steps:
            raise ValueError(f"method {method!r}: no step evaluated on every benchmark by every seed")
        row = {}
        for b in benches:
            # ties go to the earliest step
            best = max(steps, key=lambda s: (statistics.fmean(v[s][b] for v in per_seed.values()), -s))
            row[b] = Cell({seed: v[best][b] for seed, v in per_seed.items()}, (best,))
        row[MEAN] = Cell(
            {seed: statistics.fmean(row[b].values[seed] for b in benches) for seed in per_seed},
            tuple(sorted({row[b].steps[0] for b in benches})),
        )
        table[method] = row
    return table


def _fmt(cell: Cell) -> str:
    std = "–" if cell.std is None else f"{100 * cell.std:.1f}"
    return f"{100 * cell.mean:.1f} ± {std}"


def render_markdown(scores: list[Score], fixed: dict, best: dict, step: int) -> str:
    benches, k = benchmarks_of(scores), scores[0].k
    seeds = {m: sorted(c[MEAN].values) for m, c in fixed.items()}
    head = f"| method | seeds | {' | '.join(benches)} | mean |\n|---|---|{'---|' * (len(benches) + 1)}\n"
    lines = [
        f"# Average@{k} (%), mean ± std over seeds",
        "",
        f"## Fixed step {step} (the honest number)",
        "",
        head.rstrip("\n"),
    ]
    for method, row in fixed.items():
        cells = " | ".join(_fmt(row[b]) for b in [*benches, MEAN])
        lines.append(f"| {method} | {len(seeds[method])} | {cells} |")
    lines += [
        "",
        "## Best checkpoint per benchmark (the papers' protocol; step chosen per benchmark)",
        "",
        head.rstrip("\n"),
    ]
    for method, row in best.items():
        cells = " | ".join(
            f"{_fmt(row[b])} (step {','.join(map(str, row[b].steps))})" for b in [*benches, MEAN]
        )
        lines.append(f"| {method} | {len(seeds[method])} | {cells} |")
    lines += [
        "",
        "## Selection bias",
        "",
        "Best-checkpoint numbers take, per benchmark, the step with the highest seed-mean score on the same problems",
        "they report: the maximum of noisy estimates, biased upwards even if no step is truly better (and the mean",
        "column mixes steps). best − fixed of the mean column, per method (points):",
        "",
    ]
    for method in fixed:
        gap = 100 * (best[method][MEAN].mean - fixed[method][MEAN].mean)
        lines.append(
            f"- {method}: +{gap:.1f} (best {_fmt(best[method][MEAN])} vs step {step} {_fmt(fixed[method][MEAN])})"
        )
    return "\n".join(lines) + "\n"


def write_csv(path: Path, fixed: dict, best: dict, benches: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["protocol", "method", "benchmark", "steps", "mean", "std", "n_seeds", "per_seed"])
        for protocol, table in (("fixed_step", fixed), ("best_checkpoint", best)):
            for method, row in table.items():
                for b in [*benches, MEAN]:
                    c = row[b]
                    writer.writerow(
                        [
                            protocol,
                            method,
                            b,
                            " ".join(map(str, c.steps)),
                            f"{c.mean:.6f}",
                            "" if c.std is None else f"{c.std:.6f}",
                            len(c.values),
                            json.dumps({str(s): round(v, 6) for s, v in sorted(c.values.items())}),
                        ]
                    )


def plot_curves(path: Path, scores: list[Score]) -> None:
    """Seed-mean ± std of each benchmark and of their mean vs step, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index, benches = _index(scores), benchmarks_of(scores)
    panels = [*benches, MEAN] if len(benches) > 1 else benches
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for method, per_seed in sorted(index.items()):
            steps = complete_steps(per_seed, benches)
            values = [
                [statistics.fmean(v[s].values()) if panel == MEAN else v[s][panel] for v in per_seed.values()]
                for s in steps
            ]
            mean = [100 * statistics.fmean(v) for v in values]
            std = [100 * statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            ax.plot(steps, mean, marker="o", label=f"{method} (n={len(per_seed)})")
            ax.fill_between(
                steps,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.2,
            )
        ax.set_title(f"{panel}" if panel != MEAN else "mean over benchmarks")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"Average@{scores[0].k} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_table(paths: list[str | Path], step: int | None = None, out: str | Path | None = None) -> str:
    """Read, tabulate both protocols, write table.md / table.csv / curves.png; returns the markdown."""
    scores = read_scores(paths)
    step = default_fixed_step(scores) if step is None else step
    fixed, best = fixed_step_table(scores, step), best_checkpoint_table(scores)
    out = Path(out) if out else Path(paths[0]) / "table"
    out.mkdir(parents=True, exist_ok=True)
    text = render_markdown(scores, fixed, best, step)
    (out / "table.md").write_text(text)
    write_csv(out / "table.csv", fixed, best, benchmarks_of(scores))
    plot_curves(out / "curves.png", scores)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m recipe.atesd.table", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="evaluate_run outputs (run folders or folders of them)")
    parser.add_argument("--step", type=int, help="the fixed step (default: the largest step every run has)")
    parser.add_argument("--out", help="output folder (default: <first path>/table)")
    args = parser.parse_args(argv)
    text = build_table(args.paths, args.step, args.out)
    print(text)
    return text


if __name__ == "__main__":
    main()
