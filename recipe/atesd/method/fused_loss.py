"""Fused LM head + distillation loss: final hidden states in, no [T, V] tensor ever (docs/method.md §1, "Loss").

:func:`fused_distill_loss` takes the student's and the teacher's final hidden states and LM head
weights instead of their logits. It walks the rows with a non-zero weight in chunks of
``cfg.chunk_size``; for each chunk of C rows it

1. projects both sides through their LM heads: z_S = h_S W_Sᵀ, z_T = h_T W_Tᵀ  ([C, V] each),
2. scores the chunk with the same per-chunk function as the logit path
   (``losses.chunk_forward_for`` → the ``loss_kernels.py`` kernel of ``cfg.mode``), which gives
   loss_n and G_n = ∂loss_n/∂z_S(raw) (temperature included, clipping included),
3. back-propagates through the head at once, for L = Σ_n w_n loss_n:
   ∂L/∂h_S[n] = w_n G_n W_S   and   ∂L/∂W_S += Σ_{n ∈ chunk} w_n G_nᵀ h_S[n],

and frees the chunk's [C, V] buffers before the next one. Memory beyond the inputs and the two
gradients the caller needs (∂h_S [N, H] and ∂W_S [V, H]) is about six [C, V] buffers, whatever N is.
A low-precision head (bf16) accumulates ∂W_S in an fp32 [V, H] buffer (plus one [V, H] product per
chunk in the head's dtype), cast back to the head's dtype at the end.

The output is the *weighted* per-row loss w_n · loss_n (exactly 0 where w_n = 0; such rows are never
projected and get an exactly-zero gradient). Because the gradients are formed in the forward pass,
the backward pass accepts only an incoming gradient that is the same value c for every row with
w_n ≠ 0 — i.e. the caller reduces with c · Σ_n output_n (a sum, a mean, a sum / token count, …) —
and returns c × the stored gradients. Any other incoming gradient raises: ∂W_S cannot be re-weighted
after the fact without recomputing every chunk.

The teacher side is detached: a teacher head that is the student's own tensor (tied or shared
weights) gets no gradient from the teacher's logits. A student head that is also the input embedding
(tied embeddings) simply receives this function's ∂W_S and autograd adds the embedding's share.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recipe.atesd.method.losses import (
    DistillLossConfig,
    chunk_forward_for,
    named_outputs,
    target_chunk,
    teacher_views,
    validated_target_ids,
    validated_temperature,
)

__all__ = ["fused_distill_loss"]


def _accumulate_head_grad(acc: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> None:
    """acc += gᵀ h (g: [C, V], h: [C, H], both in the head's dtype): in place when acc has that dtype,
    else through one [V, H] product in the head's dtype added to the fp32 accumulator."""
    if acc.dtype == g.dtype:
        acc.addmm_(g.t(), h)
    else:
        acc.add_(torch.mm(g.t(), h))


class _FusedDistill(torch.autograd.Function):
    """(weighted loss[N], token_kl[N], top1_agree[N], student_entropy[N], target_kl[N]) from hidden states, chunk
    by chunk; ``h_t``: the teacher views' hidden states (one for ``distill.target=single``), all through ``w_t``."""

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, weights, target_ids, cfg, temperature, grad_enabled):
        n, dev = h_s.shape[0], h_s.device
        want_h = grad_enabled and ctx.needs_input_grad[0]
        want_w = grad_enabled and ctx.needs_input_grad[1]
        dtype = torch.promote_types(h_s.dtype, torch.float32)
        loss, token_kl, agree, entropy, target_kl = (
            torch.zeros(n, dtype=dtype, device=dev) for _ in range(5)
        )
        grad_h = torch.zeros_like(h_s) if want_h else None
        acc_dtype = torch.promote_types(w_s.dtype, torch.float32)
        grad_w = torch.zeros(w_s.shape, dtype=acc_dtype, device=dev) if want_w else None
        rows = torch.nonzero(weights).squeeze(1)
        w_rows = weights[rows].to(dtype)
        chunk_forward = chunk_forward_for(cfg, dev)
        for lo in range(0, rows.numel(), cfg.chunk_size):
            idx = rows[lo : lo + cfg.chunk_size]
            hs = h_s.index_select(0, idx)
            tgt = None if target_ids is None else target_ids[idx]
            z_s = hs @ w_s.t()
            z_t, c_target_kl = target_chunk(
                [h.index_select(0, idx) @ w_t.t() for h in h_t], z_s, cfg, temperature, dtype
            )
            c_loss, c_kl, c_agree, c_ent, g = chunk_forward(
                z_s,
                z_t,
                tgt,
                cfg,
                temperature,
                want_h or want_w,
                dtype,
            )
            w = w_rows[lo : lo + cfg.chunk_size]
            # .to(dtype): under verl's bf16 autocast (FSDP engine forward_step) bmm/matmul results are bf16
            loss[idx], token_kl[idx] = (c_loss * w).to(dtype), c_kl.to(dtype)
            agree[idx], entropy[idx] = c_agree.to(dtype), c_ent.to(dtype)
            target_kl[idx] = c_target_kl.to(dtype)
            if g is not None:
                g = g.mul_(w.unsqueeze(-1)).to(w_s.dtype)
                if want_h:
                    grad_h[idx] = (g @ w_s).to(grad_h.dtype)
                if want_w:
                    _accumulate_head_grad(grad_w, g, hs)
            del g, hs, z_s, z_t
        ctx.grads, ctx.rows, ctx.head_dtype = (grad_h, grad_w), rows, w_s.dtype
        ctx.mark_non_differentiable(token_kl, agree, entropy, target_kl)
        return loss, token_kl, agree, entropy, target_kl

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        if ctx.grads is None:
            raise RuntimeError("fused_distill_loss: backward was already run once (retain_graph unsupported)")
        (grad_h, grad_w), rows = ctx.grads, ctx.rows
        ctx.grads = None
        if rows.numel():
            seen = grad_loss[rows]
            if not bool((seen == seen[0]).all()):
                raise RuntimeError(
                    "fused_distill_loss: the incoming gradient differs between weighted rows; reduce the "
                    "output with c · sum (put per-row weights into `weights` instead)"
                )
            scale = seen[0]
        else:
            scale = grad_loss.new_zeros(())
        # the scale is applied in the accumulators' precision (≥ fp32), then cast to the inputs' dtypes
        if grad_h is not None:
            grad_h = grad_h.copy_(grad_h.to(scale.dtype).mul_(scale))
        if grad_w is not None:
            grad_w = grad_w.mul_(scale.to(grad_w.dtype)).to(ctx.head_dtype)
        return grad_h, grad_w, None, None, None, None, None, None, None


def fused_distill_loss(
    student_hidden: torch.Tensor,
    student_head: torch.Tensor,
    teacher_hidden: torch.Tensor | Sequence[torch.Tensor],
    teacher_head: torch.Tensor,
    cfg: DistillLossConfig,
    weights: torch.Tensor | None = None,
    target_ids: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted per-row distillation loss w_n · D_n(q* ‖ p_S) of ``cfg.mode`` from final hidden states.

    student_hidden [..., H] and student_head [V, H] (same dtype); p_S = softmax(h_S W_Sᵀ / temperature).
    teacher_hidden [..., H_T] (the one view) or a sequence of them, one per view of ``cfg.target``
    (``teacher_targets.py``: q* combined per chunk), and teacher_head [V, H_T] (same dtype; detached).
    weights [...] (bool or float; None = all 1): w_n. Rows with w_n = 0 are skipped.
    target_ids [...]: the sampled tokens (required by ``sampled_token``).
    temperature (> 0): all logits are divided by it before the softmax. Hidden states already divided
    by the sampling temperature pass none: the recipe's worker does so (verl divides the student's,
    ``recipe/atesd/glue/worker.py::_token_temperatures`` the teacher's).
    Returns ``(w · loss [...], diag)`` with detached per-row ``token_kl``, ``top1_agree``, ``student_entropy``
    and ``target_kl`` as in ``losses.distill_token_losses`` (0 on skipped rows). Differentiable w.r.t.
    ``student_hidden`` and ``student_head`` for any reduction c · Σ output (module docstring).
    """
    cfg.validate()
    temperature = validated_temperature(temperature)
    views = teacher_views(teacher_hidden, cfg)
    lead, hidden, vocab = student_hidden.shape[:-1], student_hidden.shape[-1], student_head.shape[0]
    if student_head.dim() != 2 or student_head.shape[1] != hidden:
        raise ValueError(f"student_head {tuple(student_head.shape)} must be [V, {hidden}]")
    for view in views:
        if view.shape[:-1] != lead:
            raise ValueError(
                f"teacher_hidden {tuple(view.shape)} must have the rows of student_hidden {tuple(lead)}"
            )
        if teacher_head.dim() != 2 or teacher_head.shape != (vocab, view.shape[-1]):
            raise ValueError(f"teacher_head {tuple(teacher_head.shape)} must be [{vocab}, {view.shape[-1]}]")
    pairs = [("student", student_hidden, student_head)] + [("teacher", v, teacher_head) for v in views]
    for name, h, w in pairs:
        if h.dtype != w.dtype:
            raise ValueError(f"{name}_hidden is {h.dtype} but {name}_head is {w.dtype}")
    if weights is None:
        weights = torch.ones(lead, dtype=torch.bool, device=student_hidden.device)
    elif weights.shape != lead:
        raise ValueError(f"weights {tuple(weights.shape)} must have shape {tuple(lead)}")
    target_ids = validated_target_ids(target_ids, lead, vocab, cfg)
    outs = _FusedDistill.apply(
        student_hidden.reshape(-1, hidden),
        student_head,
        tuple(v.detach().reshape(-1, v.shape[-1]) for v in views),
        teacher_head.detach(),
        weights.reshape(-1),
        target_ids,
        cfg,
        temperature,
        torch.is_grad_enabled(),
    )
    return named_outputs(outs, lead)
