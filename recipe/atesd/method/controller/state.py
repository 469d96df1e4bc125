"""State featuriser s_t of the exposure controller (docs/method.md §2.2, "State").

Raw features, updated after every student update t by :meth:`StateFeaturiser.observe`:

- ``progress``        t/T (T = total steps), capped at 1;
- ``alpha_ema``       EMA of the α used at each update;
- ``distill_loss_ema``, ``mismatch_ema``, ``probe_nll_ema``: EMAs of those step statistics
  (``probe_nll_ema`` is seeded by the baseline probe before the first update);
- ``self_confidence`` the latest batch-mean student self-confidence (not smoothed).

EMA: ema ← d·ema + (1 − d)·x, the first value initialises it (d = ``ema_decay``).

Normalisation [chosen]: the bounded features map affinely to [−1, 1] (progress → 2p − 1,
alpha_ema → 2·ema − 1). The other four are z-scored against a running mean/variance (Welford) of
the values that feature has taken so far, z = (x − μ)/√(σ² + 1e-12), clipped to ±``norm_clip``;
a feature with fewer than two observations is 0. An EMA not yet observed is 0 as well. All of it is
plain floats, so the state dict round-trips exactly.

Features are registered by name (:func:`register_feature`, bottom of this file): a new one is one decorated
function here, plus a :class:`StepStats` field in ``core.py`` if it needs a statistic not yet observed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EMA_KEYS = ("alpha", "distill_loss", "mismatch", "probe_nll")


@dataclass(frozen=True)
class StateFeature:
    """One entry of s_t by name: ``raw(featuriser, step)`` (None while unobserved, which enters s_t as 0) and
    whether it is z-scored against its running mean/variance (else it is already in [−1, 1])."""

    raw: Callable[[StateFeaturiser, int], float | None]
    zscored: bool


FEATURES: dict[str, StateFeature] = {}
"""Registered state features (``controller.state_features`` picks a subset, in its order)."""


def register_feature(name: str, *, zscored: bool):
    """Register ``raw(featuriser, step)`` as state feature ``name``."""

    def deco(raw):
        if name in FEATURES:
            raise ValueError(f"state feature {name!r} is already registered")
        FEATURES[name] = StateFeature(raw, zscored)
        return raw

    return deco


class RunningNorm:
    """Welford running mean/variance: n, μ, M2 with μ ← μ + (x−μ)/n, M2 ← M2 + (x−μ_old)(x−μ_new)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def normalise(self, x: float, clip: float) -> float:
        """z = (x − μ)/√(σ² + 1e-12) with σ² = M2/n, clipped to ±clip; 0 before two observations."""
        if self.count < 2:
            return 0.0
        z = (x - self.mean) / math.sqrt(self.m2 / self.count + 1e-12)
        return min(max(z, -clip), clip)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


class StateFeaturiser:
    """Keeps the EMAs and normalisers; :meth:`features` returns the normalised s_t."""

    def __init__(self, features: list[str], ema_decay: float, norm_clip: float, total_steps: int):
        self.names = list(features)
        self.ema_decay = ema_decay
        self.norm_clip = norm_clip
        self.total_steps = total_steps
        self.ema: dict[str, float | None] = dict.fromkeys(EMA_KEYS)
        self.self_confidence: float | None = None
        self.norms = {name: RunningNorm() for name, spec in FEATURES.items() if spec.zscored}

    def _update_ema(self, key: str, x: float) -> None:
        old = self.ema[key]
        self.ema[key] = x if old is None else self.ema_decay * old + (1.0 - self.ema_decay) * x

    def _update_norms(self) -> None:
        for name, norm in self.norms.items():
            raw = FEATURES[name].raw(self, 0)
            if raw is not None:
                norm.update(raw)

    def observe_baseline(self, probe_nll: float) -> None:
        """Seed the probe-NLL EMA with ℓ_0 (the probe before any update)."""
        self._update_ema("probe_nll", probe_nll)
        self.norms["probe_nll_ema"].update(self.ema["probe_nll"])

    def observe(
        self, alpha: float, distill_loss: float, mismatch: float, probe_nll: float, self_confidence: float
    ) -> None:
        """Fold in one update's statistics (α used, losses, ℓ_{t+1}, confidence)."""
        self._update_ema("alpha", alpha)
        self._update_ema("distill_loss", distill_loss)
        self._update_ema("mismatch", mismatch)
        self._update_ema("probe_nll", probe_nll)
        self.self_confidence = self_confidence
        self._update_norms()

    def features(self, step: int) -> list[float]:
        """Normalised s_t: one value per configured feature, in the configured order."""
        values = []
        for name in self.names:
            raw = FEATURES[name].raw(self, step)
            if raw is None:
                values.append(0.0)
            elif FEATURES[name].zscored:
                values.append(self.norms[name].normalise(raw, self.norm_clip))
            else:
                values.append(raw)
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": dict(self.ema),
            "self_confidence": self.self_confidence,
            "norms": {name: norm.state_dict() for name, norm in self.norms.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = {key: state["ema"][key] for key in EMA_KEYS}
        self.self_confidence = state["self_confidence"]
        for name, norm in self.norms.items():
            norm.load_state_dict(state["norms"][name])


@register_feature("progress", zscored=False)
def _progress(f: StateFeaturiser, step: int) -> float:
    """t/T capped at 1, mapped to [−1, 1]."""
    return 2.0 * min(step / f.total_steps, 1.0) - 1.0


@register_feature("alpha_ema", zscored=False)
def _alpha_ema(f: StateFeaturiser, step: int) -> float | None:
    """EMA of the α used, mapped to [−1, 1]."""
    return None if f.ema["alpha"] is None else 2.0 * f.ema["alpha"] - 1.0


@register_feature("distill_loss_ema", zscored=True)
def _distill_loss_ema(f: StateFeaturiser, step: int) -> float | None:
    return f.ema["distill_loss"]


@register_feature("mismatch_ema", zscored=True)
def _mismatch_ema(f: StateFeaturiser, step: int) -> float | None:
    return f.ema["mismatch"]


@register_feature("probe_nll_ema", zscored=True)
def _probe_nll_ema(f: StateFeaturiser, step: int) -> float | None:
    return f.ema["probe_nll"]


@register_feature("self_confidence", zscored=True)
def _self_confidence(f: StateFeaturiser, step: int) -> float | None:
    return f.self_confidence
