"""Learning-progress reward and pending decisions of the exposure controller (docs/method.md §2.2, "Reward").

Indexing convention: ℓ_t is the probe NLL of the student *entering* update t (0-based). ℓ_0 comes
from the baseline probe before the first update; the probe after update t is ℓ_{t+1}, and the
teacher-grounding signal measured with it is g_{t+1}. A decision made at window start t0 therefore
needs ℓ_{t0}, …, ℓ_{t0+L} and g_{t0+1}, …, g_{t0+L}, and completes after update t0 + L − 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


def progress_return(nll: list[float], gamma: float) -> float:
    """G_lp = Σ_{i=1..L} γ^{i−1} · max(0, ℓ_{t0+i−1} − ℓ_{t0+i}), with nll = [ℓ_{t0}, …, ℓ_{t0+L}]  (§2.2)."""
    return sum(
        gamma**i * max(0.0, before - after)
        for i, (before, after) in enumerate(zip(nll[:-1], nll[1:], strict=True))
    )


def grounding_return(ground: list[float], gamma: float) -> float:
    """G_gt = Σ_{i=1..L} γ^{i−1} g_{t0+i} / Σ_{i=1..L} γ^{i−1}, with ground = [g_{t0+1}, …, g_{t0+L}]  (§2.2)."""
    weights = [gamma**i for i in range(len(ground))]
    return sum(w * g for w, g in zip(weights, ground, strict=True)) / sum(weights)


@dataclass(frozen=True)
class ReturnTerm:
    """A registered return term G_k of one decision: ``fn(trajectory, γ) -> float``, where ``trajectory`` maps
    each name in ``signals`` (fields of :class:`recipe.atesd.method.controller.core.StepStats`) to its values
    x_{t0+1}, …, x_{t0+L} after the window's L updates, and — for a signal measured before the first update too —
    ``"<name>_start"`` to x_{t0} (ℓ only: the baseline probe gives ℓ_0, there is no g_0)."""

    fn: Callable[[dict[str, list[float]], float], float]
    signals: tuple[str, ...]


RETURN_TERMS: dict[str, ReturnTerm] = {}
"""Registered return terms by name; ``controller.reward_weights`` maps names to their weights w_k, and the
controller logs ``controller/return_<name>``. R = Σ_k w_k·G_k (``reward_norm: none``) or Σ_k w_k·z_k(G_k)
(``running``), ``recipe/atesd/method/controller/core.py``. Adding a term is one decorated function here plus its
weight in ``config/controller/default.yaml`` and its lines in docs/config.md and docs/metrics.md."""

START_SIGNALS = ("probe_nll",)
"""Signals also measured before the first update (the baseline probe): a trajectory of theirs starts at x_{t0}."""


def register_return_term(name: str, *, signals: tuple[str, ...]):
    """Register ``fn(trajectory, γ)`` as return term ``name`` reading the per-update ``signals``."""

    def deco(fn):
        if name in RETURN_TERMS:
            raise ValueError(f"return term {name!r} is already registered")
        RETURN_TERMS[name] = ReturnTerm(fn, tuple(signals))
        return fn

    return deco


@register_return_term("lp", signals=("probe_nll",))
def _progress_term(trajectory: dict[str, list[float]], gamma: float) -> float:
    """G_lp: learning progress on the probe (:func:`progress_return`)."""
    return progress_return([trajectory["probe_nll_start"], *trajectory["probe_nll"]], gamma)


@register_return_term("gt", signals=("teacher_ground",))
def _grounding_term(trajectory: dict[str, list[float]], gamma: float) -> float:
    """G_gt: teacher grounding on the unrevealed rest (:func:`grounding_return`)."""
    return grounding_return(trajectory["teacher_ground"], gamma)


@dataclass
class PendingDecision:
    """One decision (s, α_raw) made at a window start t0, and the signals gathered since.

    ``start`` holds x_{t0} of each of :data:`START_SIGNALS` (the latest value when the window's first update is
    observed); ``after`` collects x_{t0+1}, x_{t0+2}, … of every signal a registered term reads; complete after L
    updates. ``alpha_raw`` holds the unclipped Beta samples, one per difficulty bucket (one entry at
    ``granularity: batch``), whose joint log-probability REINFORCE recomputes at update time
    (in the non-adaptive modes they are the α's used; they never update).
    """

    state: list[float]
    alpha_raw: list[float]
    start: dict[str, float] = field(default_factory=dict)
    after: dict[str, list[float]] = field(default_factory=dict)
    updates: int = 0

    def add(self, before: dict[str, float], after: dict[str, float]) -> None:
        """Record update t ≥ t0: x_t of the start signals (only the first time) and every x_{t+1}."""
        if self.updates == 0:
            self.start = {name: float(before[name]) for name in START_SIGNALS}
        for name, value in after.items():
            self.after.setdefault(name, []).append(float(value))
        self.updates += 1

    def complete(self, lookahead: int) -> bool:
        return self.updates >= lookahead

    def returns(self, terms, gamma: float) -> dict[str, float]:
        """G_k of each named term (registered in :data:`RETURN_TERMS`)."""
        trajectory = {**self.after, **{f"{name}_start": value for name, value in self.start.items()}}
        return {name: RETURN_TERMS[name].fn(trajectory, gamma) for name in terms}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
