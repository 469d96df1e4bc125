"""Per-chunk kernels of the token-level distillation losses (docs/method.md §1, "Loss").

Every kernel sees one chunk of C tokens as a :class:`ChunkStats` (log-probabilities and
probabilities of the temperature-scaled student S and teacher T, computed once by the driver in
``losses.py``) and returns ``(loss[C], grad[C, V] | None)``, where ``grad`` is
d loss_n / d z_S — the derivative with respect to the *temperature-scaled* student logits
z_S = student_logits / temperature (the driver applies the 1/temperature factor). Gradients are
analytic (no autograd graph is built), so no [C, V] intermediate outlives its chunk.

Exactness: every formula is written so that identical student and teacher inputs give a loss and
gradient that are exactly 0 in floating point (log-ratios are differences of identical
``log_softmax`` outputs, and ``p_S - p_T``-type terms subtract identical ``exp`` outputs).

Kernels may overwrite the buffers of the ``ChunkStats`` they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ChunkStats:
    """One chunk of C tokens: ``logp_s``/``logp_t`` = log_softmax(z) and ``p_s``/``p_t`` = exp of them,
    all [C, V] in the compute dtype (the only [C, V] buffers the driver allocates); ``target_ids``
    [C] (long) or None."""

    logp_s: torch.Tensor
    logp_t: torch.Tensor
    p_s: torch.Tensor
    p_t: torch.Tensor
    target_ids: torch.Tensor | None


# kernel(chunk, cfg, need_grad) -> (loss[C], grad[C, V] | None); cfg is a recipe.atesd.method.losses.DistillLossConfig
KernelFn = Callable[[ChunkStats, Any, bool], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class LossEntry:
    """A registered loss mode: its chunk kernel and what it needs from the caller and the config
    (the shape of verl's ``DistillationLossSettings``: entries declare their inputs)."""

    kernel: KernelFn
    needs_target_ids: bool = False  # the sampled response tokens ŷ_n
    params: tuple[str, ...] = ()  # the DistillLossConfig fields the kernel reads


LOSSES: dict[str, LossEntry] = {}


def register_loss(
    name: str, *, needs_target_ids: bool = False, params: tuple[str, ...] = ()
) -> Callable[[KernelFn], KernelFn]:
    """Register a chunk kernel under ``name`` (the value of ``distill.mode``) with what it needs."""

    def deco(fn: KernelFn) -> KernelFn:
        if name in LOSSES:
            raise ValueError(f"loss mode {name!r} is already registered")
        LOSSES[name] = LossEntry(fn, needs_target_ids, params)
        return fn

    return deco


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_v a[n, v] b[n, v] as a batched matmul (no [C, V] product temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _forward_kl(ch: ChunkStats, tau: float | None, need_grad: bool):
    terms = ch.logp_t.sub_(ch.logp_s).mul_(ch.p_t)  # ℓ_{n,v}, in place
    if tau is None:
        loss = terms.sum(-1)
        return loss, (ch.p_s.sub_(ch.p_t) if need_grad else None)
    clipped = terms >= tau  # entries where min(ℓ, τ) = τ (no gradient)
    loss = terms.clamp_(max=tau).sum(-1)
    if not need_grad:
        return loss, None
    # c = Σ_v p_T(v)(1 − m_v) as a difference of two sums: exactly 0 when nothing is clipped.
    total = ch.p_t.sum(-1)
    p_t_kept = ch.p_t.masked_fill_(clipped, 0.0)
    clipped_mass = total - p_t_kept.sum(-1)
    return loss, ch.p_s.mul_((1.0 - clipped_mass).unsqueeze(-1)).sub_(p_t_kept)


@register_loss("forward_kl", params=("clip_tau",))
def forward_kl(ch: ChunkStats, cfg, need_grad: bool):
    """Full-vocabulary forward KL with per-entry clipping (docs/method.md §1):

    ℓ_{n,v} = p_T(v) (log p_T(v) − log p_S(v)),  D_n = Σ_v min(ℓ_{n,v}, τ)  (τ = clip_tau; None: no clip).
    Negative entries are kept. With m_v = [ℓ_v < τ] and c = Σ_v p_T(v)(1 − m_v) (clipped teacher mass),
    ∂D/∂z_S(j) = p_S(j)(1 − c) − m_j p_T(j)   (unclipped: p_S(j) − p_T(j)).
    """
    return _forward_kl(ch, cfg.clip_tau, need_grad)


@register_loss("reverse_kl")
def reverse_kl(ch: ChunkStats, cfg, need_grad: bool):
    """Reverse KL (docs/method.md §1, "Other modes"); clip_tau does not apply:

    D_n = Σ_v p_S(v) r_v with r_v = log p_S(v) − log p_T(v);   ∂D/∂z_S(j) = p_S(j) (r_j − D_n).
    """
    ratio = ch.logp_s.sub_(ch.logp_t)
    loss = _rowdot(ch.p_s, ratio)
    return loss, (ratio.sub_(loss.unsqueeze(-1)).mul_(ch.p_s) if need_grad else None)


@register_loss("jsd", params=("jsd_beta",))
def jsd(ch: ChunkStats, cfg, need_grad: bool):
    """Generalized Jensen–Shannon divergence JSD_β, TRL's ``generalized_jsd_loss`` convention
    (docs/method.md §1, "Other modes"; clip_tau does not apply):

    M = β p_T + (1 − β) p_S,   JSD_β = β KL(p_T ‖ M) + (1 − β) KL(p_S ‖ M).

    The endpoints are returned exactly as the method defines them: β = 0 → forward KL(p_T ‖ p_S)
    (unclipped), β = 1 → reverse KL(p_S ‖ p_T). Note this convention (like TRL's) is discontinuous
    at the endpoints: for small β, JSD_β ≈ β · KL(p_T ‖ p_S) (and ≈ (1 − β) · KL(p_S ‖ p_T) near 1).

    Stable exact-zero form, with d = log p_T − log p_S, d⁺ = max(d, 0), d⁻ = min(d, 0):
    u = log M − log p_S = log1p(β expm1(d⁻)) + d⁺ + log1p((1 − β) expm1(−d⁺)),
    JSD_β = β Σ p_T (d − u) − (1 − β) Σ p_S u,    ∂JSD_β/∂z_S(j) = −(1 − β) p_S(j) (u_j − Σ_v p_S(v) u_v).
    """
    beta = cfg.jsd_beta
    if beta == 0.0:
        return _forward_kl(ch, None, need_grad)
    if beta == 1.0:
        return reverse_kl(ch, cfg, need_grad)
    d = ch.logp_t.sub_(ch.logp_s)
    u = d.clamp(max=0.0).expm1_().mul_(beta).log1p_()
    d_pos = torch.clamp(d, min=0.0, out=ch.logp_s)  # logp_s is not needed any more
    u.add_(d_pos).add_(d_pos.neg_().expm1_().mul_(1.0 - beta).log1p_())
    s_u = _rowdot(ch.p_s, u)
    loss = beta * _rowdot(ch.p_t, d.sub_(u)) - (1.0 - beta) * s_u
    if not need_grad:
        return loss, None
    return loss, u.sub_(s_u.unsqueeze(-1)).mul_(ch.p_s).mul_(-(1.0 - beta))


@register_loss("topk_tail", params=("topk", "clip_tau"))
def topk_tail(ch: ChunkStats, cfg, need_grad: bool):
    """Forward KL over the teacher's top-k support plus one tail bucket (docs/method.md §1 and §4):

    buckets b ∈ {v_1..v_k (teacher's top-k)} ∪ {tail = the rest};  q(b) = Σ_{v∈b} p(v) for both sides;
    ℓ_b = q_T(b) (log q_T(b) − log q_S(b)),  D_n = Σ_b min(ℓ_b, τ)  (τ = clip_tau; None: no clip).
    The tail bucket makes this a proper KL between (k+1)-bucket distributions, so it is ≥ 0 unclipped;
    negative entries are kept, never clamped away (verl RFC #7856). k ≥ V means no tail bucket.
    With m_b = [ℓ_b < τ], c = Σ_b q_T(b)(1 − m_b), δ = log q_T(tail) − log q_S(tail):
    ∂D/∂z_S(j) = p_S(j)(1 − c) − m_j p_T(j) for top-k j;  p_S(j)(1 − c) − m_tail exp(log p_S(j) + δ) in the tail.
    """
    vocab = ch.logp_t.shape[-1]
    k = min(cfg.topk, vocab)
    idx = ch.logp_t.topk(k, dim=-1).indices
    lq_t = ch.logp_t.gather(-1, idx)
    lq_s = ch.logp_s.gather(-1, idx)
    q_t = ch.p_t.gather(-1, idx)
    if k < vocab:
        top_mask = torch.zeros_like(ch.logp_t, dtype=torch.bool).scatter_(-1, idx, True)
        tail_t = torch.logsumexp(ch.logp_t.masked_fill_(top_mask, -torch.inf), dim=-1, keepdim=True)
        # logp_s keeps −inf on the top-k from here on, so the tail term below vanishes there.
        tail_s = torch.logsumexp(ch.logp_s.masked_fill_(top_mask, -torch.inf), dim=-1, keepdim=True)
        del top_mask
        lq_t, lq_s = torch.cat([lq_t, tail_t], -1), torch.cat([lq_s, tail_s], -1)
        q_t = torch.cat([q_t, tail_t.exp()], -1)
    terms = q_t * (lq_t - lq_s)
    kept = torch.ones_like(terms, dtype=torch.bool) if cfg.clip_tau is None else terms < cfg.clip_tau
    loss = terms.sum(-1) if cfg.clip_tau is None else terms.clamp(max=cfg.clip_tau).sum(-1)
    if not need_grad:
        return loss, None
    clipped_mass = q_t.sum(-1) - q_t.masked_fill(~kept, 0.0).sum(-1)
    scale = (1.0 - clipped_mass).unsqueeze(-1)
    top_grad = ch.p_s.gather(-1, idx).mul_(scale).sub_(q_t[:, :k].masked_fill(~kept[:, :k], 0.0))
    grad = ch.p_s.mul_(scale)
    if k < vocab:
        delta = (lq_t[:, k:] - lq_s[:, k:]).masked_fill_(~kept[:, k:], -torch.inf)
        grad.sub_(ch.logp_s.add_(delta).exp_())
    return loss, grad.scatter_(-1, idx, top_grad)


@register_loss("sampled_token", needs_target_ids=True)
def sampled_token(ch: ChunkStats, cfg, need_grad: bool):
    """Sampled-token estimator (docs/method.md §1, "Other modes"); needs ``target_ids`` (the sampled ŷ_n):

    A_n = log p_T(ŷ_n) − log p_S(ŷ_n) (detached),  loss_n = −A_n log p_S(ŷ_n),
    ∂loss_n/∂z_S(j) = −A_n ([j = ŷ_n] − p_S(j)).
    Its gradient is a one-sample estimate of ∇ KL(p_S ‖ p_T) for ŷ_n ~ p_S; the loss value is not a KL.
    """
    tgt = ch.target_ids.unsqueeze(-1)
    lp_s_y = ch.logp_s.gather(-1, tgt).squeeze(-1)
    adv = ch.logp_t.gather(-1, tgt).squeeze(-1) - lp_s_y
    loss = -adv * lp_s_y
    if not need_grad:
        return loss, None
    return loss, ch.p_s.mul_(adv.unsqueeze(-1)).scatter_add_(-1, tgt, -adv.unsqueeze(-1))
