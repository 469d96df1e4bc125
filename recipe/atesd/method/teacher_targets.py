"""The teacher's target q*: one teacher view, or several combined per token (docs/method.md §2.7). Pure torch.

A *view* is the teacher (its weights, ``recipe/atesd/method/teacher.py``) run on one context c_T built by a
registered teacher context (``recipe/atesd/method/prompts.py::TEACHER_CONTEXTS``) at one reveal ratio: either the
controller's α of the row (``alpha=None``) or a fixed one. A *target* (``distill.target``) names its views and
how their log-probabilities combine into the distribution the student is trained toward; the loss of
``distill.mode`` then compares the student with q* exactly as with one teacher (``losses.py``, ``fused_loss.py``:
the combination runs chunk by chunk inside both drivers, so no [T, V] tensor of any view exists on the fused
path). Each view costs one teacher prefill of the micro-batch.

- ``single`` (default): q* = the one view, ``teacher_prompt.teacher_context`` at the controller's α.
- ``anchor_residual`` — AR-OPD (arXiv 2606.10385; code vanhowe/AR-OPD ``code/distil_trainer.py``,
  ``_compute_gdsdft_target``): an anchor view q_p = the configured context at the controller's α (AR-OPD's
  partial view: the first ρ of the reasoning, answer kept; here ρ = α, so a fixed α is their fixed ρ and the
  adaptive controller chooses ρ) and the full view q_f (α = 1):

      log q* = log_softmax( log q_p + λ · clamp(log q_f − log q_p, −c, c) )      (every vocabulary entry)

  λ = ``distill.residual_lambda`` (theirs: 0.6, 0.8, 1.2 in the main runs, 0.4–1.4 swept, 0.8 in the ρ sweep),
  c = ``distill.residual_clip`` (theirs: 5). λ = 0 is the anchor alone; λ = 1 with no entry clamped the full view.
- ``multi_view`` — AVSD (arXiv 2605.20643; code duykhuongnguyen/AVSD, ``src/avsd/math/multiview_distill.py``): three
  views, full (α = 1), ``incomplete`` (the first half without the answer, marked incomplete) and ``answer_only``,
  combined by AVSD's consensus gate between their geometric and arithmetic means, per entry v:

      log q_g = (1/K) Σ_k log q_k,   J = max(0, log((1/K) Σ_k q_k) − log q_g)           (the Jensen gap)
      δ_k = log q_k − log p_S,  c̄ = (1/K) Σ_k δ_k,  ā = (1/K) Σ_k |δ_k|              (p_S the detached student)
      gate = (|c̄| / (ā + ε)) · |c̄| / (|c̄| + J + ε),     log q* = log_softmax(log q_g + gate · J)

  with ε = 1e-8. Their shipped Qwen3 setting applies this gate at the sampled token only (no renormalisation)
  inside a sampled-token policy-gradient surrogate; here it is applied to every entry and renormalised, so the
  recipe's full-vocabulary losses (``distill.mode``) apply unchanged. Uniform view weights (their default).

A target is an entry of :data:`TEACHER_TARGETS`, registered with :func:`register_target`: its views, its
``combine(view_logits, student_logits, cfg) -> log q*`` over one chunk ([C, V] each, temperature-scaled, in the
compute dtype; ``student_logits`` detached), and the ``distill.*`` keys it reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from recipe.atesd.method.prompts import TEACHER_CONTEXTS


@dataclass(frozen=True)
class View:
    """One teacher view: ``context`` a ``TEACHER_CONTEXTS`` name (None: ``teacher_prompt.teacher_context``),
    ``alpha`` its reveal ratio (None: the controller's α of the row)."""

    context: str | None = None
    alpha: float | None = None


CombineFn = Callable[[Sequence[torch.Tensor], torch.Tensor, object], torch.Tensor]


@dataclass(frozen=True)
class TeacherTarget:
    """A registered target: its ``views`` (the first is the anchor: ``distill/target_kl_mean`` is measured
    against it), ``combine`` (None for one view: q* is that view), the ``distill.*`` ``keys`` it reads and
    ``check(teacher_context)``, which refuses (ValueError naming the keys) a teacher context it makes no sense
    with (None: any)."""

    views: tuple[View, ...]
    combine: CombineFn | None
    keys: tuple[str, ...]
    check: Callable[[str], None] | None = None


TEACHER_TARGETS: dict[str, TeacherTarget] = {}
"""Registered targets by name (``distill.target``). Adding one is one :func:`register_target` entry here plus its
keys in ``DistillLossConfig`` / ``config/distill/default.yaml`` and its lines in docs/method.md and docs/config.md."""


def register_target(name: str, *, views: tuple[View, ...], keys: tuple[str, ...] = (), check=None):
    """Register ``combine`` as target ``name`` over ``views`` (see :class:`TeacherTarget`); a one-view target
    registers ``None``: ``register_target("single", views=(View(),))(None)``."""

    def deco(combine):
        if name in TEACHER_TARGETS:
            raise ValueError(f"teacher target {name!r} is already registered")
        if not views or (combine is None) != (len(views) == 1):
            raise ValueError(f"teacher target {name!r}: a combine function exactly when it has several views")
        for view in views:
            if view.context is not None and view.context not in TEACHER_CONTEXTS:
                raise ValueError(f"teacher target {name!r}: unknown teacher context {view.context!r}")
        TEACHER_TARGETS[name] = TeacherTarget(tuple(views), combine, tuple(keys), check)
        return combine

    return deco


def teacher_target(name: str) -> TeacherTarget:
    """The registered target ``name``; ValueError naming ``distill.target`` otherwise."""
    if name not in TEACHER_TARGETS:
        raise ValueError(f"distill.target must be one of {sorted(TEACHER_TARGETS)}, got {name!r}")
    return TEACHER_TARGETS[name]


def check_target(name: str, teacher_context: str) -> None:
    """ValueError naming the keys when target ``name`` cannot be built on ``teacher_prompt.teacher_context``."""
    target = teacher_target(name)
    if target.check is not None:
        target.check(teacher_context)


def view_contexts(name: str, teacher_context: str) -> list[str]:
    """The teacher context of each view of target ``name``, ``teacher_context`` filling the unnamed ones."""
    return [view.context or teacher_context for view in teacher_target(name).views]


def uses_alpha(name: str, teacher_context: str) -> bool:
    """Whether the controller's α changes what target ``name`` is built from (a view at the controller's α whose
    context reads α): otherwise an adaptive controller would choose α for nothing."""
    return any(
        view.alpha is None and TEACHER_CONTEXTS[view.context or teacher_context].uses_alpha
        for view in teacher_target(name).views
    )


def combined_target(
    name: str, views: Sequence[torch.Tensor], student: torch.Tensor, cfg, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q* [C, V], KL(q* ‖ q_1) [C]) of one chunk: ``views`` the K views' temperature-scaled logits,
    ``student`` the student's (detached), both [C, V]; computed in ``dtype``. One view: q* = q_1, KL 0."""
    target = teacher_target(name)
    if len(views) != len(target.views):
        raise ValueError(f"distill.target={name!r} combines {len(target.views)} views, got {len(views)}")
    if target.combine is None:
        return views[0], views[0].new_zeros(views[0].shape[0], dtype=dtype)
    log_q = target.combine([v.to(dtype) for v in views], student.detach().to(dtype), cfg)
    anchor = torch.log_softmax(views[0].to(dtype), dim=-1)
    return log_q, (log_q.exp() * (log_q - anchor)).sum(-1)


# ---------------------------------------------------------------------- the targets (module docstring)

register_target("single", views=(View(),))(None)


def _reveals(teacher_context: str) -> None:
    if not TEACHER_CONTEXTS[teacher_context].uses_alpha:
        raise ValueError(
            f"distill.target=anchor_residual contrasts the teacher context at α (the anchor) with α = 1 (the full "
            f"view), but teacher_prompt.teacher_context={teacher_context} ignores α: both views would be one; use "
            "a context that reveals the reference (privileged)"
        )


def _views_fixed(teacher_context: str) -> None:
    if teacher_context != "privileged":
        raise ValueError(
            f"distill.target=multi_view builds its own three views (privileged, incomplete, answer_only) and does "
            f"not read teacher_prompt.teacher_context={teacher_context}: leave it at privileged"
        )


@register_target(
    "anchor_residual",
    views=(View(), View(alpha=1.0)),
    keys=("residual_lambda", "residual_clip"),
    check=_reveals,
)
def anchor_residual(views: Sequence[torch.Tensor], student: torch.Tensor, cfg) -> torch.Tensor:
    """AR-OPD: log q* = log_softmax(log q_p + λ·clamp(log q_f − log q_p, −c, c)), q_p = views[0] (the anchor at
    the controller's α), q_f = views[1] (α = 1); λ = ``cfg.residual_lambda``, c = ``cfg.residual_clip``."""
    log_p, log_f = (torch.log_softmax(v, dim=-1) for v in views)
    residual = (log_f - log_p).clamp_(-cfg.residual_clip, cfg.residual_clip)
    return torch.log_softmax(log_p + cfg.residual_lambda * residual, dim=-1)


AVSD_EPS = 1e-8


@register_target(
    "multi_view",
    views=(View("privileged", 1.0), View("incomplete", 0.5), View("answer_only", 0.0)),
    check=_views_fixed,
)
def multi_view(views: Sequence[torch.Tensor], student: torch.Tensor, cfg) -> torch.Tensor:
    """AVSD's consensus-gated combination of K views (module docstring), every entry, renormalised."""
    log_q = torch.stack([torch.log_softmax(v, dim=-1) for v in views])  # [K, C, V]
    k = log_q.shape[0]
    log_g = log_q.mean(0)
    gap = (torch.logsumexp(log_q, dim=0) - math.log(k) - log_g).clamp_min_(0.0)
    delta = log_q - torch.log_softmax(student, dim=-1)
    consensus = delta.mean(0).abs_()
    spread = delta.abs_().mean(0)
    gate = consensus / (spread + AVSD_EPS) * consensus / (consensus + gap + AVSD_EPS)
    return torch.log_softmax(log_g + gate * gap, dim=-1)
