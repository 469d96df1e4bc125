"""Learning-progress reward and pending decisions of the exposure controller (docs/method.md §2.2, "Reward").

Indexing convention: ℓ_t is the probe NLL of the student *entering* update t (0-based). ℓ_0 comes
from the baseline probe before the first update; the probe after update t is ℓ_{t+1}, and the
teacher-grounding signal measured with it is g_{t+1}. A decision made at window start t0 therefore
needs ℓ_{t0}, …, ℓ_{t0+L} and g_{t0+1}, …, g_{t0+L}, and completes after update t0 + L − 1.
"""

from __future__ import annotations

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


def lookahead_returns(nll: list[float], ground: list[float], gamma: float) -> tuple[float, float]:
    """(G_lp, G_gt) of one decision (§2.2); the reward R combines them per ``controller.reward_norm``
    (``recipe/atesd/method/controller/core.py``)."""
    if len(nll) != len(ground) + 1:
        raise ValueError(
            f"lookahead_returns: need len(nll) = len(ground) + 1, got {len(nll)} and {len(ground)}"
        )
    return progress_return(nll, gamma), grounding_return(ground, gamma)


@dataclass
class PendingDecision:
    """One decision (s, α_raw) made at a window start t0, and the signals gathered since.

    ``nll`` collects ℓ_{t0}, ℓ_{t0+1}, …; ``ground`` collects g_{t0+1}, …; complete once len(ground) = L.
    ``alpha_raw`` holds the unclipped Beta samples, one per difficulty bucket (one entry at
    ``granularity: batch``), whose joint log-probability REINFORCE recomputes at update time
    (in the non-adaptive modes they are the α's used; they never update).
    """

    state: list[float]
    alpha_raw: list[float]
    nll: list[float] = field(default_factory=list)
    ground: list[float] = field(default_factory=list)

    def add(self, nll_before: float, nll_after: float, ground_after: float) -> None:
        """Record update t ≥ t0: ℓ_t (only the first time), ℓ_{t+1} and g_{t+1}."""
        if not self.nll:
            self.nll.append(nll_before)
        self.nll.append(nll_after)
        self.ground.append(ground_after)

    def complete(self, lookahead: int) -> bool:
        return len(self.ground) >= lookahead

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
