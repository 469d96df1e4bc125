"""Evaluation metrics over n graded samples per problem (docs/method.md §3). Pure python.

A benchmark's results are a ``correct[p][j]`` table: problem ``p``, sample index ``j`` (0..n-1); every
problem has the same n. Numbers are fractions in [0, 1] (the summary prints percentages).
"""

import math
import re
import statistics
from collections.abc import Sequence


def _check_table(correct: Sequence[Sequence[bool]]) -> int:
    if not correct:
        raise ValueError("correct: no problems")
    n = len(correct[0])
    for p, row in enumerate(correct):
        if len(row) != n or n == 0:
            raise ValueError(f"correct[{p}]: expected {n} > 0 samples like correct[0], got {len(row)}")
    return n


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with c correct among n samples (Chen et al. 2021):

    pass@k = 1 - C(n-c, k) / C(n, k)   (= 1 when n - c < k)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """Benchmark pass@k: the mean over problems of :func:`pass_at_k`."""
    n = _check_table(correct)
    return statistics.fmean(pass_at_k(n, sum(map(bool, row)), k) for row in correct)


def average_at_n(correct: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """(Average@n, std) — docs/method.md §3.

    acc_j = (1/P) Σ_p correct[p][j]  (accuracy of sample index j over the P problems)
    Average@n = (1/n) Σ_j acc_j;  std = population std of acc_0..acc_{n-1} (ddof = 0; 0 when n = 1).
    """
    n = _check_table(correct)
    per_index = [statistics.fmean(bool(row[j]) for row in correct) for j in range(n)]
    return statistics.fmean(per_index), statistics.pstdev(per_index)


def vote_key(answer: str | None, correct: bool) -> str | None:
    r"""Cluster key for majority voting: every correct answer is equivalent to the gold, so all share the
    key ``"<correct>"``; a wrong answer is keyed by a light canonical form (no spaces, ``\dfrac``/``\tfrac``
    -> ``\frac``, no leading zeros in an integer); None (no answer) does not vote.
    """
    if correct:
        return "<correct>"
    if answer is None or not answer.strip():
        return None
    key = re.sub(r"\s+|\\[,;! ]", "", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"^(-?)0+(\d)", r"\1\2", key) if re.fullmatch(r"-?\d+", key) else key


def majority_correct(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the most frequent :func:`vote_key` is the correct cluster; a tie goes to the cluster whose
    first member comes first; no votes at all is wrong."""
    if len(answers) != len(correct):
        raise ValueError(f"answers ({len(answers)}) and correct ({len(correct)}) differ in length")
    counts: dict[str, int] = {}
    for answer, ok in zip(answers, correct, strict=True):
        key = vote_key(answer, bool(ok))
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return False
    best = max(counts.values())
    return next(key for key in counts if counts[key] == best) == "<correct>"


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]], k: int) -> float:
    """Benchmark maj@k: the mean over problems of :func:`majority_correct` on sample indices 0..k-1."""
    n = _check_table(correct)
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k needs 1 <= k <= n={n}, got k={k}")
    if len(answers) != len(correct):
        raise ValueError(f"answers has {len(answers)} problems, correct has {len(correct)}")
    return statistics.fmean(majority_correct(a[:k], c[:k]) for a, c in zip(answers, correct, strict=True))


def k_values(n: int) -> list[int]:
    """The k reported for pass@k / maj@k: {1, 2, 4, 8, n} ∩ [1, n], ascending."""
    return sorted({k for k in (1, 2, 4, 8, n) if 1 <= k <= n})


def length_stats(n_tokens: Sequence[int]) -> dict[str, float]:
    """Response length in tokens: mean, median, p90 (nearest rank), max."""
    if not n_tokens:
        raise ValueError("n_tokens: empty")
    ordered = sorted(n_tokens)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "p90": p90,
        "max": ordered[-1],
    }
