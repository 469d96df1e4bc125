"""Per-problem difficulty signals and difficulty buckets (docs/method.md §2.4).

A signal maps the ``extra_info`` of a batch of rows to one difficulty value each (larger = harder). Signals are
registered by name (:data:`SIGNALS`, ``controller.difficulty_signal``); every one reads the row's ``extra_info``
only, so the teacher workers can place a row by themselves, and none reads the reference solution: the
teacher's exposure must not depend on what only the teacher may see.

- ``dataset_level``: d = float(extra_info[difficulty_level_key]) (``controller.difficulty_level_key``; the toy
  world's ``extra_info.difficulty``, ``recipe/atesd/toy/build_data.py``; MATH's level).

Buckets: bucket(d) = #{i : e_i ≤ d} for edges e_1 < … < e_{K−1} (:func:`assign_buckets`); quantile edges
from a sample of the signal (:func:`quantile_edges`). A window's α per bucket is an :class:`ExposureTable`,
whose :meth:`ExposureTable.row_alphas` gives each row its bucket and α from its ``extra_info`` (the teacher
workers, recipe/atesd/glue/worker.py); :func:`row_buckets` places rows without a table (the trainer's
per-bucket metrics, recipe/atesd/glue/trainer.py); :func:`bucket_occupancy` counts rows per bucket
(``exposure/occupancy_bucket_*``, docs/metrics.md).

The controller's keys keep their names down to the function that reads them (``difficulty_signal``,
``difficulty_level_key``), and their one default is ``recipe/atesd/method/controller/config.py``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Signal = Callable[[Sequence[Any], str], list[float]]
"""``fn(infos, difficulty_level_key) -> list[float]``: one difficulty per row from its ``extra_info``."""

SIGNALS: dict[str, Signal] = {}
"""Registered difficulty signals by name."""


def register_signal(name: str):
    """Register ``fn(infos, difficulty_level_key)`` as difficulty signal ``name``."""

    def deco(fn: Signal) -> Signal:
        if name in SIGNALS:
            raise ValueError(f"difficulty signal {name!r} is already registered")
        SIGNALS[name] = fn
        return fn

    return deco


def difficulty(difficulty_signal: str, infos: Sequence[Any], difficulty_level_key: str) -> list[float]:
    """d for every row (its ``extra_info`` in ``infos``) by the registered signal ``difficulty_signal``; an
    unknown name is a ValueError naming ``controller.difficulty_signal`` and the known names, a value that is
    not finite one naming the row."""
    if difficulty_signal not in SIGNALS:
        raise ValueError(
            f"controller.difficulty_signal = {difficulty_signal!r} is not a registered difficulty signal; "
            f"known: {sorted(SIGNALS)}"
        )
    values = SIGNALS[difficulty_signal](infos, difficulty_level_key)
    for row, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(
                f"difficulty signal {difficulty_signal!r}: row {row} has difficulty {value!r}, not finite"
            )
    return values


@register_signal("dataset_level")
def _dataset_level(infos: Sequence[Any], difficulty_level_key: str) -> list[float]:
    """d = extra_info[difficulty_level_key] as a float; a row without it, or with a non-number, is a ValueError
    naming the row and the key."""
    key = difficulty_level_key
    out = []
    for row, info in enumerate(infos):
        if not isinstance(info, Mapping) or key not in info:
            raise ValueError(f"difficulty signal 'dataset_level': row {row} has no extra_info.{key}")
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"difficulty signal 'dataset_level': row {row} extra_info.{key} = {value!r} is not a number"
            )
        out.append(float(value))
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

    def row_alphas(
        self, infos: Sequence[Any], difficulty_signal: str, difficulty_level_key: str
    ) -> tuple[list[float], list[int]]:
        """(α_r, bucket_r) of every row from its ``extra_info`` (``infos``): bucket_r = :func:`row_buckets`,
        α_r = bucket_alphas[bucket_r]. With one bucket every row gets the window's one α and the signal is
        never read (a row needs no level under ``granularity: batch``)."""
        buckets = row_buckets(infos, self.edges, difficulty_signal, difficulty_level_key)
        return [self.bucket_alphas[k] for k in buckets], buckets


def row_buckets(
    infos: Sequence[Any], edges: Sequence[float], difficulty_signal: str, difficulty_level_key: str
) -> list[int]:
    """Each row's bucket from its ``extra_info``: 0 for every row with no edges (K = 1, the signal is never
    read), else assign_buckets(d, edges) with d = :func:`difficulty` of the rows."""
    if not edges:
        return [0] * len(infos)
    return assign_buckets(difficulty(difficulty_signal, infos, difficulty_level_key), edges)


def bucket_occupancy(buckets: Sequence[int], num_buckets: int) -> list[int]:
    """n_k = #{r : bucket_r = k}, k = 0 … K−1; a bucket outside [0, K) is a ValueError naming the row."""
    counts = [0] * num_buckets
    for row, k in enumerate(buckets):
        if not 0 <= k < num_buckets:
            raise ValueError(f"bucket_occupancy: row {row} has bucket {k}, outside [0, {num_buckets})")
        counts[k] += 1
    return counts
