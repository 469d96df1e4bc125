"""Per-problem difficulty signals and difficulty buckets (docs/method.md §2.4).

A signal maps a batch of problems to one difficulty value each (larger = harder). Signals are registered
by name (:data:`SIGNALS`, ``controller.difficulty_signal``) with the inputs they need declared, so the glue
can refuse a signal whose inputs a run does not produce (:func:`require_inputs`). None reads the reference
solution: the teacher's exposure must not depend on what only the teacher may see.

- ``dataset_level``      needs ``extra_info``: d = float(extra_info[level_key]) (the toy world's
  ``extra_info.difficulty``, ``recipe/atesd/toy/build_data.py``; MATH's level).
- ``rollout_pass_rate``  needs ``uid``, ``correct`` (rollout.n > 1): d(u) = 1 − mean of ``correct`` over the
  rollouts of problem u in this batch.
- ``running_estimate``   needs ``uid``, ``history``: d(u) = the EMA of earlier visits' failure
  rates of u (``prior`` on the first visit); :func:`update_running_estimate` folds in this batch after use.

Buckets: bucket(d) = #{i : e_i ≤ d} for edges e_1 < … < e_{K−1} (:func:`assign_buckets`); quantile edges
from a sample of the signal (:func:`quantile_edges`). A window's α per bucket is an :class:`ExposureTable`;
:func:`bucket_occupancy` counts rows per bucket (``exposure/occupancy_bucket_*``, docs/metrics.md); :func:`row_buckets`
places rows from their ``extra_info`` (the teacher workers, recipe/atesd/glue/worker.py).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SIGNAL_INPUTS = ("extra_info", "uid", "correct", "history")


@dataclass(frozen=True)
class DifficultySignal:
    """``fn(inputs, options) -> list[float]`` (one difficulty per row) and the input names it needs."""

    fn: Callable[[Mapping[str, Any], Mapping[str, Any]], list[float]]
    needs: tuple[str, ...]


SIGNALS: dict[str, DifficultySignal] = {}
"""Registered difficulty signals by name."""


def register_signal(name: str, *, needs: tuple[str, ...]):
    """Register ``fn(inputs, options)`` as difficulty signal ``name`` needing the inputs ``needs``."""
    unknown = [n for n in needs if n not in SIGNAL_INPUTS]
    if unknown:
        raise ValueError(f"difficulty signal {name!r}: unknown needs {unknown}, known {list(SIGNAL_INPUTS)}")

    def deco(fn):
        if name in SIGNALS:
            raise ValueError(f"difficulty signal {name!r} is already registered")
        SIGNALS[name] = DifficultySignal(fn, tuple(needs))
        return fn

    return deco


def require_inputs(name: str, available: Sequence[str]) -> None:
    """ValueError naming the signal and its missing inputs if ``available`` lacks any of its needs."""
    if name not in SIGNALS:
        raise ValueError(
            f"controller.difficulty_signal = {name!r} is invalid: must be one of {list(SIGNALS)}"
        )
    missing = [n for n in SIGNALS[name].needs if n not in available]
    if missing:
        raise ValueError(f"difficulty signal {name!r} needs {missing}, which this run does not provide")


def difficulty(name: str, inputs: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> list[float]:
    """d for every row by the registered signal ``name``; every value finite (else ValueError naming the row)."""
    require_inputs(name, list(inputs))
    values = SIGNALS[name].fn(inputs, options or {})
    for row, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"difficulty signal {name!r}: row {row} has difficulty {value!r}, not finite")
    return values


def _group_failure(uids: Sequence[Any], correct: Sequence[Any]) -> dict[Any, float]:
    """{u: 1 − mean(correct of u's rows)}; ``correct`` must be 0/1 or bool per row."""
    if len(uids) != len(correct):
        raise ValueError(f"difficulty: {len(uids)} uids but {len(correct)} correct flags")
    sums: dict[Any, list[float]] = {}
    for row, (u, c) in enumerate(zip(uids, correct, strict=True)):
        if c not in (0, 1):
            raise ValueError(f"difficulty: row {row} has correct = {c!r}, must be 0/1")
        sums.setdefault(u, []).append(float(c))
    return {u: 1.0 - sum(v) / len(v) for u, v in sums.items()}


@register_signal("dataset_level", needs=("extra_info",))
def _dataset_level(inputs: Mapping[str, Any], options: Mapping[str, Any]) -> list[float]:
    """d = extra_info[level_key] (``options['level_key']``, default ``difficulty``) as a float."""
    key = options.get("level_key", "difficulty")
    out = []
    for row, info in enumerate(inputs["extra_info"]):
        if not isinstance(info, Mapping) or key not in info:
            raise ValueError(f"difficulty signal 'dataset_level': row {row} has no extra_info.{key}")
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"difficulty signal 'dataset_level': row {row} extra_info.{key} = {value!r} is not a number"
            )
        out.append(float(value))
    return out


@register_signal("rollout_pass_rate", needs=("uid", "correct"))
def _rollout_pass_rate(inputs: Mapping[str, Any], options: Mapping[str, Any]) -> list[float]:
    """d = 1 − pass rate of the row's problem over its rollouts in this batch."""
    failure = _group_failure(inputs["uid"], inputs["correct"])
    return [failure[u] for u in inputs["uid"]]


@register_signal("running_estimate", needs=("uid", "history"))
def _running_estimate(inputs: Mapping[str, Any], options: Mapping[str, Any]) -> list[float]:
    """d = history[u] (the EMA of u's earlier failure rates), ``options['prior']`` (default 0.5) if unseen."""
    prior = float(options.get("prior", 0.5))
    history = inputs["history"]
    return [float(history.get(u, prior)) for u in inputs["uid"]]


def update_running_estimate(
    history: Mapping[Any, float], uids: Sequence[Any], correct: Sequence[Any], decay: float
) -> dict[Any, float]:
    """New table: h(u) ← decay·h(u) + (1 − decay)·f_u for each problem u in the batch (f_u its failure rate),
    h(u) = f_u on the first visit; other entries unchanged."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"update_running_estimate: decay = {decay!r} must be in [0, 1)")
    out = dict(history)
    for u, f in _group_failure(uids, correct).items():
        out[u] = f if u not in out else decay * out[u] + (1.0 - decay) * f
    return out


def quantile_edges(values: Sequence[float], num_buckets: int) -> list[float]:
    """K − 1 edges e_i = the (i/K)-quantile of ``values`` (sorted values v_0 ≤ … ≤ v_{N−1}: e_i = v_{min(N−1, ⌈i·N/K⌉)}),
    duplicates removed, so ties never split one difficulty across buckets (fewer edges if values repeat)."""
    if num_buckets < 1:
        raise ValueError(f"quantile_edges: num_buckets = {num_buckets!r} must be >= 1")
    if not values:
        raise ValueError("quantile_edges: no values")
    ordered = sorted(values)
    n = len(ordered)
    edges: list[float] = []
    for i in range(1, num_buckets):
        edge = ordered[min(n - 1, math.ceil(i * n / num_buckets))]
        if edge > ordered[0] and (not edges or edge > edges[-1]):
            edges.append(edge)
    return edges


def assign_buckets(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """bucket(d) = #{i : e_i ≤ d} ∈ {0, …, len(edges)}; edges strictly increasing (else ValueError)."""
    if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise ValueError(f"assign_buckets: edges {list(edges)} must be strictly increasing")
    return [bisect.bisect_right(edges, d) for d in values]


@dataclass(frozen=True)
class ExposureTable:
    """One hold window's α per difficulty bucket (docs/method.md §2.4): what the trainer broadcasts to the
    teacher workers instead of one α. Row r's teacher prompt c_T(α_r) uses α_r = bucket_alphas[bucket(d_r)],
    bucket(d) = #{i : e_i ≤ d} over ``edges``. With no edges (K = 1) every row gets the window's one α."""

    window_id: int
    bucket_alphas: tuple[float, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.bucket_alphas) != len(self.edges) + 1:
            raise ValueError(
                f"ExposureTable: {len(self.bucket_alphas)} bucket alphas for {len(self.edges)} edges "
                f"(need len(edges) + 1)"
            )
        for k, alpha in enumerate(self.bucket_alphas):
            if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
                raise ValueError(f"ExposureTable: bucket {k} alpha = {alpha!r} must be a number in [0, 1]")
        assign_buckets([], self.edges)  # edges strictly increasing, else ValueError

    def row_alphas(self, difficulties: Sequence[float]) -> list[float]:
        """α_r = bucket_alphas[bucket(d_r)] for every row."""
        return [self.bucket_alphas[k] for k in assign_buckets(difficulties, self.edges)]


def row_buckets(
    infos: Sequence[Mapping[str, Any]], edges: Sequence[float], signal: str, level_key: str
) -> list[int]:
    """Each row's bucket from its ``extra_info``: 0 for every row with no edges (K = 1, the signal is never
    read), else assign_buckets(d, edges) with d = ``signal`` over ``{"extra_info": infos}`` — so only signals
    whose needs are ``extra_info`` alone can place a row here (else ValueError naming the signal)."""
    if not edges:
        return [0] * len(infos)
    return assign_buckets(difficulty(signal, {"extra_info": infos}, {"level_key": level_key}), edges)


def bucket_occupancy(buckets: Sequence[int], num_buckets: int) -> list[int]:
    """n_k = #{r : bucket_r = k}, k = 0 … K−1; a bucket outside [0, K) is a ValueError naming the row."""
    counts = [0] * num_buckets
    for row, k in enumerate(buckets):
        if not 0 <= k < num_buckets:
            raise ValueError(f"bucket_occupancy: row {row} has bucket {k}, outside [0, {num_buckets})")
        counts[k] += 1
    return counts
