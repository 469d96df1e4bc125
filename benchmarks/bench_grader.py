"""Grading throughput of recipe.atesd.rewards.math_grader on model-like answers.

``python benchmarks/bench_grader.py [--n 10000] [--workers N] [--timeout-s S] [--seed 0] [--no-pathological]``

Answers are built from the 90 gold answers of data/eval (boxed surface forms that grade correct,
perturbations that grade wrong, reasoning text of 0.5-8 KB before the box, responses without a box),
plus ~1% pathological ones: power towers and huge powers (sympy stalls in C: killed by the watchdog),
10k nested braces (rejected by the cap), 1 MB responses and 400-term sums. ``--workers`` threads grade
concurrently, each with its own grading subprocess (default: all cores). Prints answers/second overall
and without the pathological ones, the status counts (timeouts included) and the per-call latency of
the same clean answers graded by math-verify in-process, for the cost of the subprocess round trip.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recipe.atesd.method.answer import last_box  # noqa: E402
from recipe.atesd.rewards import math_grader as mg  # noqa: E402

FILLER = "Let me consider the cases carefully. We have x = 3 and so 2x + 1 = 7, then check again. "


def gold_answers() -> list[str]:
    golds = []
    for name in ("aime24", "aime25", "hmmt25"):
        for line in (REPO_ROOT / "data" / "eval" / f"{name}.jsonl").read_text().splitlines():
            golds.append(json.loads(line)["answer"])
    return golds


def clean_answer(rng: random.Random, gold: str) -> str:
    reasoning = FILLER * rng.randint(5, 90)
    kind = rng.random()
    if kind < 0.45:
        box = rng.choice([f"\\boxed{{{gold}}}", f"$\\boxed{{ {gold} }}$", f"\\boxed{{{gold}.}}"])
    elif kind < 0.85:
        box = rng.choice(
            [f"\\boxed{{({gold})+1}}", f"\\boxed{{2({gold})}}", f"\\boxed{{{rng.randint(0, 999)}}}"]
        )
    else:
        return reasoning + "I could not finish."
    return f"{reasoning}So the answer is {box}."


PATHOLOGICAL = (
    ("power tower", lambda: "\\boxed{2^{2^{2^{10}}}}", 10),
    ("huge power", lambda: "\\boxed{10^{10^{7}}}", 10),
    ("10k nested braces", lambda: "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001, 30),
    ("1 MB response", lambda: "z" * 1_000_000 + "\\boxed{7}", 30),
    ("400-term sum", lambda: "\\boxed{" + "+".join(["1"] * 400) + "}", 20),
)


def build(n: int, seed: int, pathological: bool) -> list[tuple[str, str, str]]:
    """(kind, text, gold) tuples, shuffled: pathological ones as listed (if wanted), the rest clean."""
    rng = random.Random(seed)
    golds = gold_answers()
    items = [(kind, make(), "70") for kind, make, count in PATHOLOGICAL for _ in range(count) if pathological]
    while len(items) < n:
        gold = rng.choice(golds)
        items.append(("clean", clean_answer(rng, gold), gold))
    rng.shuffle(items)
    return items


def in_process_latency(items: list[tuple[str, str, str]]) -> float:
    """Mean seconds per clean answer with math-verify called directly (no subprocess, no timeout)."""
    from math_verify import parse, verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    extraction = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    start = time.perf_counter()
    for _, text, gold in items:
        content, status = last_box(text, max_chars=1000, max_depth=32)
        if status == "ok":
            pred = parse(
                f"${mg.normalize_answer(content, gold)}$", extraction, "no_fallback", parsing_timeout=None
            )
            verify(
                parse(f"${gold}$", extraction, "no_fallback", parsing_timeout=None),
                pred,
                timeout_seconds=None,
            )
    return (time.perf_counter() - start) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--timeout-s", type=float, default=mg.GraderConfig.timeout_s)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pathological", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    cfg = mg.GraderConfig(timeout_s=args.timeout_s)
    items = build(args.n, args.seed, args.pathological)
    with ThreadPoolExecutor(args.workers) as pool:  # start the grading subprocesses before timing
        list(pool.map(lambda _: mg.grade("\\boxed{1}", "1", cfg), range(args.workers)))
        mg.reset_grader_stats()
        timings = {}

        def timed(item):
            start = time.perf_counter()
            result = mg.grade(item[1], item[2], cfg)
            timings.setdefault(item[0], []).append(time.perf_counter() - start)
            return result

        start = time.perf_counter()
        results = list(pool.map(timed, items))
        wall = time.perf_counter() - start
    mg.shutdown_workers()
    clean = [i for i in items if i[0] == "clean"]
    clean_wall = sum(timings["clean"]) / args.workers
    report = {
        "answers": len(items),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "timeout_s": cfg.timeout_s,
        "kill_grace_s": cfg.kill_grace_s,
        "wall_s": round(wall, 1),
        "answers_per_s": round(len(items) / wall, 1),
        "clean_answers_per_s_est": round(len(clean) / clean_wall, 1),
        "correct": sum(r.correct for r in results),
        "status_counts": mg.grader_stats(),
        "mean_s_by_kind": {k: round(statistics.fmean(v), 4) for k, v in sorted(timings.items())},
        "max_s_by_kind": {k: round(max(v), 2) for k, v in sorted(timings.items())},
        "in_process_clean_s_per_answer": round(in_process_latency(clean[:1000]), 4),
    }
    print(json.dumps(report, indent=2))
    print(f"timeouts: {report['status_counts']['timeout']}")


if __name__ == "__main__":
    main()
