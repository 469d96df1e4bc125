"""State featuriser s_t of the exposure controller (method.md §2.2, "State").

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
"""

from __future__ import annotations

import math
from typing import Any

EMA_KEYS = ("alpha", "distill_loss", "mismatch", "probe_nll")
ZSCORED = ("distill_loss_ema", "mismatch_ema", "probe_nll_ema", "self_confidence")


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
        self.norms = {name: RunningNorm() for name in ZSCORED}

    def _raw(self, name: str) -> float | None:
        return self.self_confidence if name == "self_confidence" else self.ema[name.removesuffix("_ema")]

    def _update_ema(self, key: str, x: float) -> None:
        old = self.ema[key]
        self.ema[key] = x if old is None else self.ema_decay * old + (1.0 - self.ema_decay) * x

    def _update_norms(self) -> None:
        for name, norm in self.norms.items():
            raw = self._raw(name)
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
            if name == "progress":
                values.append(2.0 * min(step / self.total_steps, 1.0) - 1.0)
            elif name == "alpha_ema":
                ema = self.ema["alpha"]
                values.append(0.0 if ema is None else 2.0 * ema - 1.0)
            else:
                raw = self._raw(name)
                values.append(0.0 if raw is None else self.norms[name].normalise(raw, self.norm_clip))
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
