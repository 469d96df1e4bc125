"""Configuration of the exposure controller (method.md §2.2).

Every **[chosen]** default of §2.2 is a field here; ``recipe/atesd/config/controller/default.yaml``
mirrors this dataclass field for field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

STATE_FEATURES = (
    "progress",
    "alpha_ema",
    "distill_loss_ema",
    "mismatch_ema",
    "probe_nll_ema",
    "self_confidence",
)
"""Known state features s_t (method.md §2.2, "State"), in the order they enter the policy."""

MODES = ("fixed", "random", "adaptive", "schedule")
SCHEDULE_KINDS = ("linear", "cosine")


@dataclass
class ControllerConfig:
    """Controller hyperparameters (method.md §2.2).

    hold_window (H): one α is held for H consecutive updates [chosen 5].
    lookahead (L), gamma (γ): reward horizon and discount [chosen 10, 0.9].
    lambda_gt (λ_gt): weight of the teacher-grounding return G_gt; 0 disables it [chosen 0.1].
    batch_decisions (B): completed decisions per REINFORCE update [chosen 4].
    hidden, layers: MLP f_φ width and number of linear layers (tanh between) [chosen 32, 2].
    lr: Adam learning rate of φ [chosen 1e-3].
    entropy_target (H_target), entropy_coef (c): penalty c·max(0, H[π] − H_target)² [chosen −1.0, 0.1];
        the differential entropy of Beta is ≤ 0 with 0 at the uniform Beta(1, 1).
    ema_decay: d in ema ← d·ema + (1 − d)·x for the EMA state features [chosen 0.9].
    adv_eps (ε): A_j = (R_j − mean R)/(std R + ε) [chosen 1e-8].
    norm_clip: z-scored state features are clipped to [−norm_clip, norm_clip] [chosen 5.0].
    state_features: which entries of s_t are used, a subset of :data:`STATE_FEATURES`.
    """

    hold_window: int = 5
    lookahead: int = 10
    gamma: float = 0.9
    lambda_gt: float = 0.1
    batch_decisions: int = 4
    hidden: int = 32
    layers: int = 2
    lr: float = 1e-3
    entropy_target: float = -1.0
    entropy_coef: float = 0.1
    ema_decay: float = 0.9
    adv_eps: float = 1e-8
    norm_clip: float = 5.0
    state_features: list[str] = field(default_factory=lambda: list(STATE_FEATURES))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ControllerConfig:
        """Build from a plain mapping (e.g. a Hydra group); unknown keys → ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"controller config: unknown key(s) {unknown}")
        kwargs = dict(values)
        if "state_features" in kwargs:
            kwargs["state_features"] = list(kwargs["state_features"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, exposure_cfg: Any = None) -> None:
        """Raise ValueError naming the offending key; with ``exposure_cfg`` also cross-check its α fields.

        ``exposure_cfg`` is duck-typed: any object with mode, alpha, alpha_min, alpha_max,
        schedule_start, schedule_end, schedule_kind (``exposure.ExposureConfig``).
        """
        _check(self.hold_window >= 1, "controller.hold_window (H)", self.hold_window, ">= 1")
        _check(self.lookahead >= 1, "controller.lookahead (L)", self.lookahead, ">= 1")
        _check(0.0 < self.gamma <= 1.0, "controller.gamma", self.gamma, "in (0, 1]")
        _check(self.lambda_gt >= 0.0, "controller.lambda_gt", self.lambda_gt, ">= 0")
        _check(self.batch_decisions >= 2, "controller.batch_decisions (B)", self.batch_decisions, ">= 2")
        _check(self.hidden >= 1, "controller.hidden", self.hidden, ">= 1")
        _check(self.layers >= 1, "controller.layers", self.layers, ">= 1")
        _check(self.lr > 0.0, "controller.lr", self.lr, "> 0")
        _check(math.isfinite(self.entropy_target), "controller.entropy_target", self.entropy_target, "finite")
        _check(self.entropy_coef >= 0.0, "controller.entropy_coef", self.entropy_coef, ">= 0")
        _check(0.0 <= self.ema_decay < 1.0, "controller.ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.adv_eps > 0.0, "controller.adv_eps", self.adv_eps, "> 0")
        _check(self.norm_clip > 0.0, "controller.norm_clip", self.norm_clip, "> 0")
        feats = list(self.state_features)
        _check(len(feats) > 0, "controller.state_features", feats, "non-empty")
        unknown = [f for f in feats if f not in STATE_FEATURES]
        _check(not unknown, "controller.state_features", unknown, f"a subset of {list(STATE_FEATURES)}")
        _check(len(set(feats)) == len(feats), "controller.state_features", feats, "without duplicates")
        if exposure_cfg is not None:
            check_exposure(exposure_cfg)


def check_exposure(cfg: Any) -> None:
    """Cross-check the exposure fields the controller reads; ValueError naming the key."""
    _check(cfg.mode in MODES, "exposure.mode", cfg.mode, f"one of {list(MODES)}")
    for key in ("alpha", "alpha_min", "alpha_max", "schedule_start", "schedule_end"):
        value = getattr(cfg, key)
        _check(0.0 <= value <= 1.0, f"exposure.{key}", value, "in [0, 1]")
    _check(
        cfg.alpha_min <= cfg.alpha_max,
        "exposure.alpha_min",
        cfg.alpha_min,
        f"<= exposure.alpha_max ({cfg.alpha_max})",
    )
    _check(
        cfg.schedule_kind in SCHEDULE_KINDS, "exposure.schedule_kind", cfg.schedule_kind, str(SCHEDULE_KINDS)
    )


def _check(ok: bool, key: str, value: Any, requirement: str) -> None:
    if not ok:
        raise ValueError(f"{key} = {value!r} is invalid: must be {requirement}")
