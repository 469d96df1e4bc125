"""Exposure modes: how the controller chooses a window's α's (docs/method.md §2.2, "Modes").

A mode is a registry entry (:func:`register_exposure_mode`): a function that draws one window's α per
difficulty bucket from a :class:`Window` (what the controller holds at the window start), and whether the
controller learns from its decisions (REINFORCE, ``recipe/atesd/method/controller/core.py``). Every mode uses
the same windows and computes the same rewards (for logging); ``controller.exposure_mode`` names the entry, and
the entry names the ``controller.*`` keys it reads (docs/config.md). Adding a mode is one decorated function
here plus its keys in ``ControllerConfig`` / ``config/controller/default.yaml`` and its line in docs/config.md.

Draw order is part of a mode: the controller's private generator is shared by every random draw of the run,
so a mode draws its K values in bucket order (k = 0 … K−1) and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from recipe.atesd.method.controller.policy import DTYPE, BetaPolicy, sample_beta


@dataclass(frozen=True)
class Window:
    """What a mode may read at window start t0: the config, the step, the run length, the bucket count K,
    the state s_{t0}, the controller's generator and its Beta policy (``adaptive``)."""

    cfg: Any  # ControllerConfig (not imported: config.py lists this registry's names)
    t0: int
    total_steps: int
    buckets: int
    state: list[float]
    generator: torch.Generator
    policy: BetaPolicy


@dataclass(frozen=True)
class Draw:
    """One window's decision: α_k used by the teacher, α_raw,k as drawn (what REINFORCE scores; = α_k outside
    ``adaptive``), and the Beta parameters per bucket (NaN for a mode without a policy)."""

    alpha: list[float]
    alpha_raw: list[float]
    beta_a: list[float]
    beta_b: list[float]


@dataclass(frozen=True)
class ExposureMode:
    """A registered mode: ``draw(window) -> Draw``; ``learns``: the controller runs REINFORCE on its decisions;
    ``keys``: the ``controller.*`` keys it reads besides the windows (documentation and the dummy-entry test)."""

    draw: Callable[[Window], Draw]
    learns: bool
    keys: tuple[str, ...]


EXPOSURE_MODES: dict[str, ExposureMode] = {}
"""Registered exposure modes by name (``controller.exposure_mode``)."""


def register_exposure_mode(name: str, *, learns: bool = False, keys: tuple[str, ...] = ()):
    """Register ``draw(window) -> Draw`` as exposure mode ``name``."""

    def deco(draw):
        if name in EXPOSURE_MODES:
            raise ValueError(f"exposure mode {name!r} is already registered")
        EXPOSURE_MODES[name] = ExposureMode(draw, learns, tuple(keys))
        return draw

    return deco


def unlearned(alpha: list[float]) -> Draw:
    """A draw without a policy: α_raw = α, Beta parameters NaN."""
    nan = [math.nan] * len(alpha)
    return Draw(list(alpha), list(alpha), nan, nan)


def policy_inputs(state: list[float], buckets: int) -> list[list[float]]:
    """[s ; o_k] for k = 0 … K−1, o_k the dummy coding of bucket k: o_0 = 0 ∈ R^{K−1}, o_k = e_{k−1} (§2.4).
    For K = 1 this is [s]: the batch-level policy input."""
    return [list(state) + [1.0 if j == k - 1 else 0.0 for j in range(buckets - 1)] for k in range(buckets)]


# ---------------------------------------------------------------------- the modes


@register_exposure_mode("fixed", keys=("alpha",))
def fixed(w: Window) -> Draw:
    """α_k = ``alpha`` for every window (α = 1 is OPSD)."""
    return unlearned([float(w.cfg.alpha)] * w.buckets)


@register_exposure_mode("random", keys=("alpha_min", "alpha_max"))
def uniform(w: Window) -> Draw:
    """α_k ~ U[alpha_min, alpha_max], drawn per window and bucket (the papers' uncontrolled ablation)."""
    lo, hi = w.cfg.alpha_min, w.cfg.alpha_max
    return unlearned(
        [lo + (hi - lo) * torch.rand((), generator=w.generator, dtype=DTYPE).item() for _ in range(w.buckets)]
    )


@register_exposure_mode("schedule", keys=("schedule_start", "schedule_end", "schedule_kind"))
def schedule(w: Window) -> Draw:
    """α(p) at p = min(1, t0/(T−1)), held for the window, every bucket alike (ours):
    linear s + (e − s)·p; cosine e + (s − e)·(1 + cos πp)/2."""
    start, end = w.cfg.schedule_start, w.cfg.schedule_end
    p = min(1.0, w.t0 / max(w.total_steps - 1, 1))
    if w.cfg.schedule_kind == "linear":
        alpha = start + (end - start) * p
    else:
        alpha = end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))
    return unlearned([alpha] * w.buckets)


@register_exposure_mode("adaptive", learns=True, keys=("alpha_min", "alpha_max"))
def adaptive(w: Window) -> Draw:
    """ATESD: α_raw,k ~ Beta(a_k, b_k) with (a_k, b_k) = f_φ([s_{t0} ; o_k]); α_k = clip(α_raw,k, alpha_min,
    alpha_max) (docs/method.md §2.2, §2.4)."""
    with torch.no_grad():
        a, b = w.policy(torch.tensor(policy_inputs(w.state, w.buckets), dtype=DTYPE))
        beta_a, beta_b = a.tolist(), b.tolist()
        alpha_raw = [sample_beta(ak, bk, w.generator) for ak, bk in zip(beta_a, beta_b, strict=True)]
    alpha = [min(max(x, w.cfg.alpha_min), w.cfg.alpha_max) for x in alpha_raw]
    return Draw(alpha, alpha_raw, beta_a, beta_b)
