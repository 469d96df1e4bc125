"""Summary of an evaluation run (docs/method.md §3): generations.jsonl rows -> summary.json / summary.md."""

import statistics
from collections import Counter
from collections.abc import Sequence

from recipe.atesd.eval.metrics import average_at_n, k_values, length_stats, maj_at_k, mean_pass_at_k

ROW_FIELDS = (
    "benchmark",
    "id",
    "sample_index",
    "seed",
    "text",
    "answer",
    "correct",
    "grade_status",
    "n_tokens",
    "finish_reason",
)


def benchmark_summary(problem_ids: Sequence[str], rows: Sequence[dict], n: int) -> dict:
    """Metrics of one benchmark from its rows; every (problem, sample index < n) must be present once."""
    by_key = {(r["id"], r["sample_index"]): r for r in rows if r["sample_index"] < n}
    missing = [(pid, j) for pid in problem_ids for j in range(n) if (pid, j) not in by_key]
    if missing:
        raise ValueError(f"{len(missing)} (id, sample_index) rows missing, e.g. {missing[:3]}")
    table = [[by_key[(pid, j)] for j in range(n)] for pid in problem_ids]
    correct = [[bool(r["correct"]) for r in row] for row in table]
    answers = [[r["answer"] for r in row] for row in table]
    flat = [r for row in table for r in row]
    mean, std = average_at_n(correct)
    return {
        "n_problems": len(problem_ids),
        "n_samples": n,
        f"mean@{n}": mean,
        "std": std,
        "pass@k": {str(k): mean_pass_at_k(correct, k) for k in k_values(n)},
        "maj@k": {str(k): maj_at_k(answers, correct, k) for k in k_values(n)},
        "per_problem_accuracy": {
            pid: statistics.fmean(c) for pid, c in zip(problem_ids, correct, strict=True)
        },
        "response_tokens": length_stats([r["n_tokens"] for r in flat]),
        "truncation_rate": statistics.fmean(r["finish_reason"] == "length" for r in flat),
        "no_answer_rate": statistics.fmean(r["answer"] is None for r in flat),
        "grade_status": dict(Counter(r["grade_status"] for r in flat)),
    }


def summarize(problems: dict[str, Sequence[str]], rows: Sequence[dict], n: int) -> dict:
    """``{"n_samples", "benchmarks": {name: benchmark_summary}, "mean": mean of the benchmarks' mean@n}``."""
    per = {
        name: benchmark_summary(ids, [r for r in rows if r["benchmark"] == name], n)
        for name, ids in problems.items()
    }
    return {"n_samples": n, "benchmarks": per, "mean": statistics.fmean(b[f"mean@{n}"] for b in per.values())}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render_markdown(summary: dict) -> str:
    """Tables in percent: Average@n ± std, pass@k, maj@k, lengths and truncation per benchmark."""
    n = summary["n_samples"]
    ks = k_values(n)
    head = ["benchmark", f"Avg@{n}", "std", *(f"pass@{k}" for k in ks), *(f"maj@{k}" for k in ks)]
    head += ["mean tokens", "p90 tokens", "truncated %", "no answer %"]
    lines = [f"# Evaluation summary (n = {n} samples per problem)", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for name, b in summary["benchmarks"].items():
        cells = [name, _pct(b[f"mean@{n}"]), _pct(b["std"])]
        cells += [_pct(b["pass@k"][str(k)]) for k in ks] + [_pct(b["maj@k"][str(k)]) for k in ks]
        tokens = b["response_tokens"]
        cells += [f"{tokens['mean']:.0f}", f"{tokens['p90']:.0f}", _pct(b["truncation_rate"])]
        cells.append(_pct(b["no_answer_rate"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean of the benchmarks' Avg@{n}: {_pct(summary['mean'])}", ""]
    for name, b in summary["benchmarks"].items():
        solved = sorted(b["per_problem_accuracy"].items(), key=lambda kv: -kv[1])
        lines.append(
            f"**{name}** per-problem accuracy: " + ", ".join(f"{pid} {_pct(a)}" for pid, a in solved)
        )
        lines.append("")
    return "\n".join(lines)
