"""Configuration of the exposure controller (docs/method.md §2.2): the α policy and its learning.

Every **[chosen]** default of §2.2 is a field here; ``recipe/atesd/config/controller/default.yaml``
mirrors this dataclass field for field. α has one home: the controller decides it from these keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from recipe.atesd.method.controller.exposure import EXPOSURE_MODES
from recipe.atesd.method.controller.reward import RETURN_TERMS
from recipe.atesd.method.controller.state import FEATURES
from recipe.atesd.method.difficulty import SIGNALS

GRANULARITIES = ("batch", "per_difficulty")
SCHEDULE_KINDS = ("linear", "cosine")
REWARD_NORMS = ("none", "running")


@dataclass
class ControllerConfig:
    """The α policy and the controller's hyperparameters (docs/method.md §2.2).

    exposure_mode: a registered mode (``exposure.py::EXPOSURE_MODES``): fixed (α = ``alpha``; α = 1 is OPSD) |
        random (α ~ U[alpha_min, alpha_max] per window, the papers' uncontrolled ablation) | adaptive (ATESD:
        α ~ Beta from the learned policy) | schedule (a deterministic curriculum from schedule_start to
        schedule_end, linear or cosine; ours).
    alpha: α of ``fixed``. alpha_min, alpha_max: clip range of a sampled α, range of ``random`` [chosen 0.05, 1].
    schedule_start, schedule_end, schedule_kind: the ``schedule`` curriculum [ours: 1.0 → 0.25, linear].
    hold_window (H): one α is held for H consecutive updates [chosen 5].
    lookahead (L), gamma (γ): reward horizon and discount [chosen 10, 0.9].
    reward_weights: return term → weight w_k of the reward (terms registered in ``reward.py::RETURN_TERMS``):
        ``lp`` learning progress G_lp [1.0, the paper], ``gt`` teacher grounding G_gt [λ_gt, chosen 0.1; 0 keeps
        it logged only]. Every listed term is computed and logged (``controller/return_<term>``).
    reward_norm: how the returns are combined: none (R = Σ_k w_k·G_k; the paper: G_lp + λ_gt·G_gt) | running
        (R = Σ_k w_k·z_k(G_k), each return z-scored against its running mean/std over the decisions completed
        so far, so the weights weigh the terms in standard units) [chosen running].
    batch_decisions (B): completed decisions per REINFORCE update [chosen 4].
    hidden, layers: MLP f_φ width and number of linear layers (tanh between) [chosen 32, 2].
    lr: Adam learning rate of φ [chosen 5e-2].
    entropy_target (H_target), entropy_floor (H_floor), entropy_coef (c): the entropy band
        c·[max(0, H̄ − H_target)² + max(0, H_floor − H̄)²] [chosen 0.0, −0.7, 1.0]; the differential
        entropy of a Beta is ≤ 0 with 0 at the uniform Beta(1, 1), so H_target = 0 switches the upper
        side off and H_floor keeps the policy from collapsing.
    ema_decay: d in ema ← d·ema + (1 − d)·x for the EMA state features [chosen 0.9].
    adv_eps (ε): A_j = (R_j − mean R)/(std R + ε) [chosen 1e-8].
    norm_clip: z-scored state features (and, with reward_norm running, z-scored returns) are clipped to
        [−norm_clip, norm_clip] [chosen 5.0].
    state_features: which entries of s_t are used, a subset of the registered :data:`state.FEATURES`.
    granularity: batch (one α per window for every sample: the papers, default) | per_difficulty (one α per
        difficulty bucket per window, docs/method.md §2.4; the batch controller is its K = 1 case).
    num_buckets (K): difficulty buckets of ``per_difficulty`` [chosen 3]; ``batch`` is K = 1.
    difficulty_signal: the registered signal that places a problem in a bucket
        (``recipe/atesd/method/difficulty.py::SIGNALS``) [chosen dataset_level, §2.4].
    difficulty_level_key: the ``extra_info`` key ``dataset_level`` reads [chosen difficulty: the toy world].
    bucket_edges: K − 1 strictly increasing edges, bucket(d) = #{i : e_i ≤ d}; empty = the K-quantiles of the
        signal over the training rows [chosen empty].
    """

    exposure_mode: str = "adaptive"
    alpha: float = 1.0
    alpha_min: float = 0.05
    alpha_max: float = 1.0
    schedule_start: float = 1.0
    schedule_end: float = 0.25
    schedule_kind: str = "linear"
    hold_window: int = 5
    lookahead: int = 10
    gamma: float = 0.9
    reward_weights: dict[str, float] = field(default_factory=lambda: {"lp": 1.0, "gt": 0.1})
    reward_norm: str = "running"
    batch_decisions: int = 4
    hidden: int = 32
    layers: int = 2
    lr: float = 5e-2
    entropy_target: float = 0.0
    entropy_floor: float = -0.7
    entropy_coef: float = 1.0
    ema_decay: float = 0.9
    adv_eps: float = 1e-8
    norm_clip: float = 5.0
    state_features: list[str] = field(default_factory=lambda: list(FEATURES))
    granularity: str = "batch"
    num_buckets: int = 3
    difficulty_signal: str = "dataset_level"
    difficulty_level_key: str = "difficulty"
    bucket_edges: list[float] = field(default_factory=list)

    @property
    def buckets(self) -> int:
        """K: the number of α's per window (1 under ``granularity: batch``)."""
        return 1 if self.granularity == "batch" else self.num_buckets

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ControllerConfig:
        """Build from a plain mapping (e.g. a Hydra group); unknown keys → ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"controller config: unknown key(s) {unknown}")
        kwargs = dict(values)
        for key in ("state_features", "bucket_edges"):
            if key in kwargs:
                kwargs[key] = list(kwargs[key])
        if "reward_weights" in kwargs:
            kwargs["reward_weights"] = dict(kwargs["reward_weights"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> ControllerConfig:
        """Raise ValueError naming the offending key; return self."""
        modes = list(EXPOSURE_MODES)
        _check(
            self.exposure_mode in EXPOSURE_MODES,
            "controller.exposure_mode",
            self.exposure_mode,
            f"one of {modes}",
        )
        for key in ("alpha", "alpha_min", "alpha_max", "schedule_start", "schedule_end"):
            value = getattr(self, key)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0
            _check(ok, f"controller.{key}", value, "a number in [0, 1]")
        _check(
            self.alpha_min <= self.alpha_max,
            "controller.alpha_min",
            self.alpha_min,
            f"<= controller.alpha_max ({self.alpha_max})",
        )
        kinds = list(SCHEDULE_KINDS)
        _check(
            self.schedule_kind in SCHEDULE_KINDS,
            "controller.schedule_kind",
            self.schedule_kind,
            f"one of {kinds}",
        )
        _check(self.hold_window >= 1, "controller.hold_window (H)", self.hold_window, ">= 1")
        _check(self.lookahead >= 1, "controller.lookahead (L)", self.lookahead, ">= 1")
        _check(0.0 < self.gamma <= 1.0, "controller.gamma", self.gamma, "in (0, 1]")
        weights = self.reward_weights
        _check(
            isinstance(weights, dict) and len(weights) > 0,
            "controller.reward_weights",
            weights,
            "a non-empty mapping",
        )
        for name, w in weights.items():
            _check(
                name in RETURN_TERMS,
                "controller.reward_weights",
                name,
                f"a registered return term {sorted(RETURN_TERMS)}",
            )
            ok = isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0.0
            _check(ok, f"controller.reward_weights.{name}", w, "a finite number >= 0")
        norms = list(REWARD_NORMS)
        _check(
            self.reward_norm in REWARD_NORMS, "controller.reward_norm", self.reward_norm, f"one of {norms}"
        )
        _check(self.batch_decisions >= 2, "controller.batch_decisions (B)", self.batch_decisions, ">= 2")
        _check(self.hidden >= 1, "controller.hidden", self.hidden, ">= 1")
        _check(self.layers >= 1, "controller.layers", self.layers, ">= 1")
        _check(self.lr > 0.0, "controller.lr", self.lr, "> 0")
        _check(math.isfinite(self.entropy_target), "controller.entropy_target", self.entropy_target, "finite")
        _check(
            math.isfinite(self.entropy_floor) and self.entropy_floor <= self.entropy_target,
            "controller.entropy_floor",
            self.entropy_floor,
            f"finite and <= controller.entropy_target ({self.entropy_target})",
        )
        _check(self.entropy_coef >= 0.0, "controller.entropy_coef", self.entropy_coef, ">= 0")
        _check(0.0 <= self.ema_decay < 1.0, "controller.ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.adv_eps > 0.0, "controller.adv_eps", self.adv_eps, "> 0")
        _check(self.norm_clip > 0.0, "controller.norm_clip", self.norm_clip, "> 0")
        feats = list(self.state_features)
        _check(len(feats) > 0, "controller.state_features", feats, "non-empty")
        unknown = [f for f in feats if f not in FEATURES]
        _check(not unknown, "controller.state_features", unknown, f"a subset of {list(FEATURES)}")
        _check(len(set(feats)) == len(feats), "controller.state_features", feats, "without duplicates")
        grans = list(GRANULARITIES)
        _check(
            self.granularity in GRANULARITIES, "controller.granularity", self.granularity, f"one of {grans}"
        )
        _check(
            isinstance(self.num_buckets, int)
            and not isinstance(self.num_buckets, bool)
            and self.num_buckets >= 1,
            "controller.num_buckets (K)",
            self.num_buckets,
            "an int >= 1",
        )
        signals = list(SIGNALS)
        _check(
            self.difficulty_signal in SIGNALS,
            "controller.difficulty_signal",
            self.difficulty_signal,
            f"one of {signals}",
        )
        _check(
            isinstance(self.difficulty_level_key, str) and self.difficulty_level_key != "",
            "controller.difficulty_level_key",
            self.difficulty_level_key,
            "a non-empty string",
        )
        edges = list(self.bucket_edges)
        numbers = all(
            isinstance(e, int | float) and not isinstance(e, bool) and math.isfinite(e) for e in edges
        )
        _check(
            numbers and all(b > a for a, b in zip(edges[:-1], edges[1:], strict=True)),
            "controller.bucket_edges",
            edges,
            "finite numbers, strictly increasing",
        )
        _check(
            not edges or len(edges) == self.num_buckets - 1,
            "controller.bucket_edges",
            edges,
            f"empty (quantiles) or controller.num_buckets - 1 = {self.num_buckets - 1} edges",
        )
        return self


def _check(ok: bool, key: str, value: Any, requirement: str) -> None:
    if not ok:
        raise ValueError(f"{key} = {value!r} is invalid: must be {requirement}")
