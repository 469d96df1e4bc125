"""Per-token weights of the distillation loss: a registry of weightings (docs/method.md §2.6). Pure torch.

The loss of an update is the token mean of w_n · ℓ_n over its response tokens (ℓ_n the per-token loss of
``distill.mode``, recipe/atesd/method/losses.py); a weighting gives w_n from where the token sits in its response,
and composes with every teacher context and exposure mode (it touches neither the teacher's prompt nor its target).

- ``none`` (default): w_n = 1.
- ``position`` — PW-OPSD (arXiv 2605.21606; code SaFo-Lab/PW-OPSD, ``code/ea_opsd_trainer.py``, its PWOPSD branch):
  for the i-th valid token (1-based) of a response of L valid tokens,

      w_i = w_min + (1 − w_min) · σ((frac_i − τ) / s),   frac_i = (i − 0.5) / L,

  so the early tokens of a response (where it picks a path) weigh down to w_min and the late ones (carrying it
  out) ≈ 1. The authors' setting ("Moderate"): (w_min, τ, s) = (0.25, 0.30, 0.10), on the clipped forward KL.
  Their code reduces the weighted loss per sequence (mean over each response's tokens, then over responses); this
  recipe keeps its one reduction, the token mean over the update's response tokens, which is their ablation's
  ``position_global_reduction=True`` cell (the schedule without the length normalisation).

A weighting is an entry of :data:`TOKEN_WEIGHTINGS`, registered with the :func:`register_weighting` decorator on
``weights(mask, lengths, cfg)`` → w (fp64, 0 on invalid tokens) over the packed response tokens (``mask``: which
are valid, packed row after row; ``lengths``: each row's packed length); it declares the ``distill.*`` keys it
reads (``keys``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenWeighting:
    weights: Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]
    keys: tuple[str, ...]


TOKEN_WEIGHTINGS: dict[str, TokenWeighting] = {}


def register_weighting(name: str, *, keys: tuple[str, ...] = ()):
    """Register ``weights(mask, lengths, cfg) -> w`` as token weighting ``name`` (see :class:`TokenWeighting`)."""

    def deco(weights):
        if name in TOKEN_WEIGHTINGS:
            raise ValueError(f"token weighting {name!r} is already registered")
        TOKEN_WEIGHTINGS[name] = TokenWeighting(weights, tuple(keys))
        return weights

    return deco


def token_weighting(name: str) -> TokenWeighting:
    """The registered weighting ``name``; ValueError naming ``distill.token_weighting`` otherwise."""
    if name not in TOKEN_WEIGHTINGS:
        raise ValueError(f"distill.token_weighting must be one of {sorted(TOKEN_WEIGHTINGS)}, got {name!r}")
    return TOKEN_WEIGHTINGS[name]


def valid_positions(mask: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(i, L) per packed token: i = its 1-based index among its row's valid tokens (0 where invalid), L = its
    row's number of valid tokens. ``mask`` [T] bool packed row after row, ``lengths`` [B] with Σ = T."""
    sizes = [int(n) for n in lengths]
    if sum(sizes) != mask.numel():
        raise ValueError(
            f"token weights: row lengths sum to {sum(sizes)}, the mask has {mask.numel()} tokens"
        )
    index, count = [], []
    for row in torch.split(mask.to(torch.int64), sizes):
        index.append(torch.cumsum(row, 0) * row)
        count.append(torch.full_like(row, int(row.sum())))
    empty = mask.new_zeros(0, dtype=torch.int64)
    return (torch.cat(index), torch.cat(count)) if index else (empty, empty)


@register_weighting("none")
def uniform_weights(mask: torch.Tensor, lengths: torch.Tensor, cfg) -> torch.Tensor:
    """w_n = 1 on every valid token (0 elsewhere): the plain token mean."""
    return mask.to(torch.float64)


@register_weighting("position", keys=("position_w_min", "position_tau", "position_s"))
def position_weights(mask: torch.Tensor, lengths: torch.Tensor, cfg) -> torch.Tensor:
    """PW-OPSD's w_i = w_min + (1 − w_min)·σ((frac_i − τ)/s), frac_i = (i − 0.5)/L (module docstring), in fp64;
    0 on invalid tokens. ``cfg``: ``position_w_min``, ``position_tau``, ``position_s``."""
    index, count = valid_positions(mask, lengths)
    frac = (index.to(torch.float64) - 0.5).clamp(min=0.0) / count.clamp(min=1).to(torch.float64)
    w = cfg.position_w_min + (1.0 - cfg.position_w_min) * torch.sigmoid(
        (frac - cfg.position_tau) / cfg.position_s
    )
    return w * mask
