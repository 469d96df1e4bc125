"""Token-level distillation losses for on-policy self-distillation (docs/method.md §1, "Loss").

Public API:
- :class:`DistillLossConfig` (mirrors ``config/distill/default.yaml`` field for field).
- :data:`LOSSES` / :func:`register_loss`: name → :class:`LossEntry` (chunk kernel + what it needs, ``loss_kernels.py``).
- :func:`distill_token_losses`: per-token loss ``[T]`` plus detached diagnostics, computed in chunks
  of ``chunk_size`` tokens by a custom autograd function. The forward pass computes the analytic
  student-logit gradient chunk by chunk straight into one preallocated tensor of the student's
  dtype; backward only scales it by the incoming per-token gradient. No [T, V] fp32 intermediate
  exists at any time, so the memory beyond the inputs and their gradient does not grow with T.
The token mean over the batch's valid response tokens is the worker's (``recipe/atesd/glue/worker.py::ATESDWorker._loss``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recipe.atesd.method.loss_kernels import LOSSES, ChunkStats, LossEntry, register_loss
from recipe.atesd.method.teacher_targets import combined_target, teacher_target
from recipe.atesd.method.token_weights import token_weighting

__all__ = [
    "LOSSES",
    "LossEntry",
    "DistillLossConfig",
    "distill_token_losses",
    "register_loss",
]


@dataclass
class DistillLossConfig:
    """Distillation loss settings (docs/method.md §1); the teacher's weights are ``teacher.*``, its prompt ``teacher_prompt.*``.

    mode: a key of ``LOSSES`` (forward_kl | reverse_kl | jsd | topk_tail | sampled_token).
    clip_tau: per-entry clip τ of forward_kl and topk_tail (None = off); paper: 0.05 (1.7B/4B), 0.06 (8B).
    jsd_beta: β of JSD_β (0 = forward KL, 1 = reverse KL).
    topk: teacher support size k of topk_tail.
    chunk_size: tokens per chunk; peak extra memory ≈ 4 × chunk_size × V × 4 bytes (fp32 buffers).
    use_torch_compile: on CUDA, fuse each chunk's element-wise work with torch.compile (CPU: eager).
      Fused kernels keep the loss exactly 0 for identical inputs; the gradient then is ≤ ~1e-7, not 0.
    fused: the worker scores from final hidden states and LM head weights (``fused_loss.py``): no
      [T, V] logits of either model; false = this file's path from verl's [T, V] student logits
      (the reference). Both give the same loss (``recipe/atesd/glue/worker.py``).
    token_weighting: a key of ``token_weights.TOKEN_WEIGHTINGS``: w_n of the loss's token mean of w_n · ℓ_n
      (``none``: 1; ``position``: PW-OPSD's schedule over the response, ``token_weights.py``).
    position_w_min, position_tau, position_s: PW-OPSD's (w_min, τ, s) of ``position``; theirs (0.25, 0.30, 0.10).
    target: a key of ``teacher_targets.TEACHER_TARGETS``: the distribution q* the student is trained toward, from
      one teacher view (``single``) or several combined per token (``anchor_residual``, ``multi_view``).
    residual_lambda, residual_clip: AR-OPD's λ and c of ``anchor_residual`` (``teacher_targets.py``).
    """

    mode: str = "forward_kl"
    clip_tau: float | None = 0.05
    jsd_beta: float = 0.5
    topk: int = 64
    chunk_size: int = 256
    use_torch_compile: bool = True
    fused: bool = True
    token_weighting: str = "none"
    position_w_min: float = 0.25
    position_tau: float = 0.30
    position_s: float = 0.10
    target: str = "single"
    residual_lambda: float = 0.8
    residual_clip: float = 5.0

    def validate(self) -> DistillLossConfig:
        """Raise ValueError naming the offending key; return self."""
        if self.mode not in LOSSES:
            raise ValueError(f"distill.mode: unknown mode {self.mode!r} (known: {sorted(LOSSES)})")
        if self.clip_tau is not None and not self.clip_tau > 0:
            raise ValueError(f"distill.clip_tau must be > 0 or None, got {self.clip_tau!r}")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ValueError(f"distill.jsd_beta must be in [0, 1], got {self.jsd_beta!r}")
        if self.topk < 1:
            raise ValueError(f"distill.topk must be >= 1, got {self.topk!r}")
        if self.chunk_size < 1:
            raise ValueError(f"distill.chunk_size must be >= 1, got {self.chunk_size!r}")
        token_weighting(self.token_weighting)
        if not 0.0 <= self.position_w_min <= 1.0:
            raise ValueError(f"distill.position_w_min must be in [0, 1], got {self.position_w_min!r}")
        if not 0.0 <= self.position_tau <= 1.0:
            raise ValueError(f"distill.position_tau must be in [0, 1], got {self.position_tau!r}")
        if not self.position_s > 0:
            raise ValueError(f"distill.position_s must be > 0, got {self.position_s!r}")
        teacher_target(self.target)
        if not (math.isfinite(self.residual_lambda) and self.residual_lambda >= 0):
            raise ValueError(
                f"distill.residual_lambda must be a finite number >= 0, got {self.residual_lambda!r}"
            )
        if not self.residual_clip > 0:
            raise ValueError(f"distill.residual_clip must be > 0, got {self.residual_clip!r}")
        return self


def _log_softmax(x: torch.Tensor, temperature: float, dtype: torch.dtype) -> torch.Tensor:
    if temperature == 1.0:
        return torch.log_softmax(x, dim=-1, dtype=dtype)
    return torch.log_softmax(x.to(dtype, copy=True).div_(temperature), dim=-1)


def _chunk_stats(student, teacher, target_ids, temperature, dtype) -> tuple[ChunkStats, torch.Tensor]:
    """The chunk's four [C, V] buffers, plus the unclipped forward KL Σ_v p_T (log p_T − log p_S)
    (its [C, V] summands are freed before p_S is allocated, so at most four buffers coexist)."""
    logp_s = _log_softmax(student, temperature, dtype)
    logp_t = _log_softmax(teacher, temperature, dtype)
    p_t = logp_t.exp()
    token_kl = torch.sub(logp_t, logp_s).mul_(p_t).sum(-1)
    return ChunkStats(logp_s, logp_t, logp_s.exp(), p_t, target_ids), token_kl


def _chunk_forward(student, teacher, target_ids, cfg, temperature: float, need_grad: bool, dtype):
    """One chunk: ``(loss, token_kl, top1_agree, student_entropy, grad | None)``, where ``grad`` is
    d loss / d (raw student logits) = the kernel's gradient w.r.t. z_S = logits / temperature, ÷ temperature."""
    ch, token_kl = _chunk_stats(student, teacher, target_ids, temperature, dtype)
    agree = ch.logp_s.argmax(-1) == ch.logp_t.argmax(-1)
    entropy = -torch.bmm(ch.p_s.unsqueeze(1), ch.logp_s.unsqueeze(2)).view(-1)
    loss, grad = LOSSES[cfg.mode].kernel(ch, cfg, need_grad)
    if grad is not None and temperature != 1.0:
        grad = grad.div_(temperature)
    return loss, token_kl, agree, entropy, grad


@functools.cache
def _compiled_chunk_forward():
    """``_chunk_forward`` through torch.compile (``use_torch_compile``, CUDA only): the ~20 element-wise
    passes over each [C, V] chunk fuse into a few kernels (benchmarks/gpu_check.py measures it)."""
    return torch.compile(_chunk_forward)


def chunk_forward_for(cfg: DistillLossConfig, device: torch.device):
    """The per-chunk function both drivers call (this file and ``fused_loss.py``): ``_chunk_forward``,
    through torch.compile when ``cfg.use_torch_compile`` and the device is CUDA."""
    return _compiled_chunk_forward() if cfg.use_torch_compile and device.type == "cuda" else _chunk_forward


def validated_temperature(temperature: float) -> float:
    """``temperature`` as a float, after checking it is > 0 (both drivers divide the logits by it)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return float(temperature)


def validated_target_ids(
    target_ids: torch.Tensor | None, lead: torch.Size, vocab: int, cfg: DistillLossConfig
) -> torch.Tensor | None:
    """``target_ids`` flattened to long, after checking shape ``lead`` and range [0, vocab); raises when
    the mode needs them and they are missing."""
    if target_ids is None:
        if LOSSES[cfg.mode].needs_target_ids:
            raise ValueError(f"distill.mode {cfg.mode!r} needs target_ids (the sampled response tokens)")
        return None
    if target_ids.shape != lead or target_ids.dtype.is_floating_point:
        raise ValueError(f"target_ids must be an integer tensor of shape {tuple(lead)}")
    if target_ids.numel() and not 0 <= int(target_ids.min()) <= int(target_ids.max()) < vocab:
        raise ValueError(f"target_ids must lie in [0, {vocab})")
    return target_ids.reshape(-1).long()


def teacher_views(teacher, cfg: DistillLossConfig) -> list[torch.Tensor]:
    """The teacher's views as a list — one tensor is the one view — after checking their number is what
    ``cfg.target`` combines (ValueError naming the key). Both drivers call it."""
    views = [teacher] if isinstance(teacher, torch.Tensor) else list(teacher)
    expected = len(teacher_target(cfg.target).views)
    if len(views) != expected:
        raise ValueError(f"distill.target={cfg.target!r} needs {expected} teacher view(s), got {len(views)}")
    return views


def named_outputs(outs, lead: torch.Size) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, diagnostics) from a driver's autograd outputs (loss, token_kl, top1_agree, student_entropy,
    target_kl), each reshaped to ``lead``. Both drivers call it."""
    loss, token_kl, agree, entropy, target_kl = (o.view(lead) for o in outs)
    return loss, {
        "token_kl": token_kl,
        "top1_agree": agree,
        "student_entropy": entropy,
        "target_kl": target_kl,
    }


def target_chunk(views, student, cfg, temperature: float, dtype):
    """(teacher logits for ``chunk_forward``, KL(q* ‖ q_1) [C]) of one chunk: the one view's raw logits, or with
    several views log q* (``teacher_targets.combined_target`` of the temperature-scaled views) × temperature,
    which the kernels' own division by the temperature turns back into log q*. Both drivers call it."""
    if len(views) == 1 and teacher_target(cfg.target).combine is None:
        return views[0], views[0].new_zeros(views[0].shape[0], dtype=dtype)
    scaled = [v.to(dtype) / temperature for v in views]
    log_q, target_kl = combined_target(
        cfg.target, scaled, student.detach().to(dtype) / temperature, cfg, dtype
    )
    return (log_q if temperature == 1.0 else log_q * temperature), target_kl


class _ChunkedDistill(torch.autograd.Function):
    """loss[T] (+ detached token_kl, top1_agree, student_entropy, target_kl) from [T, V] logits, chunk by chunk;
    ``teacher``: the views' [T, V] logits (one for ``distill.target=single``)."""

    @staticmethod
    def forward(ctx, student, teacher, target_ids, cfg, temperature, grad_enabled):
        need_grad = grad_enabled and ctx.needs_input_grad[0]  # no [T, V] gradient buffer under no_grad
        n = student.shape[0]
        dtype = torch.promote_types(student.dtype, torch.float32)
        loss, token_kl, agree, entropy, target_kl = (
            torch.empty(n, dtype=dtype, device=student.device) for _ in range(5)
        )
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device) if need_grad else None
        chunk_forward = chunk_forward_for(cfg, student.device)
        for lo in range(0, n, cfg.chunk_size):
            hi = min(lo + cfg.chunk_size, n)
            tgt = None if target_ids is None else target_ids[lo:hi]
            t, target_kl[lo:hi] = target_chunk(
                [v[lo:hi] for v in teacher], student[lo:hi], cfg, temperature, dtype
            )
            loss[lo:hi], token_kl[lo:hi], agree[lo:hi], entropy[lo:hi], g = chunk_forward(
                student[lo:hi], t, tgt, cfg, temperature, need_grad, dtype
            )
            if need_grad:
                grad[lo:hi] = g
            del g, t
        ctx.grad, ctx.chunk_size = grad, cfg.chunk_size
        ctx.mark_non_differentiable(token_kl, agree, entropy, target_kl)
        return loss, token_kl, agree, entropy, target_kl

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "distill_token_losses: backward was already run once (retain_graph unsupported)"
            )
        ctx.grad = None
        if grad.dtype == grad_loss.dtype:
            grad.mul_(grad_loss.unsqueeze(-1))
        else:
            step = ctx.chunk_size  # per-chunk fp32 product, cast back to the gradient's dtype
            for lo in range(0, grad.shape[0], step):
                part = grad[lo : lo + step]
                part.copy_(part.to(grad_loss.dtype) * grad_loss[lo : lo + step].unsqueeze(-1))
        return grad, None, None, None, None, None


def distill_token_losses(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | Sequence[torch.Tensor],
    cfg: DistillLossConfig,
    target_ids: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token distillation loss D(q* ‖ p_S) of ``cfg.mode`` (docs/method.md §1), q* the teacher's target.

    student_logits: [..., V]; teacher_logits: [..., V] (the one view), or a sequence of them, one per view of
    ``cfg.target`` (``teacher_targets.py``: q* combined per token); any float dtype, computed per chunk in
    fp32, or fp64 for fp64 inputs; all are divided by ``temperature`` (> 0) before the softmax.
    Logits already divided by the sampling temperature pass none: the recipe's worker does so
    (verl divides the student's, ``recipe/atesd/glue/worker.py::_token_temperatures`` the teacher's).
    target_ids: [...] sampled token ids (required by ``sampled_token``).
    Returns ``(token_loss[...], diag)``: the loss (differentiable w.r.t. the student logits only;
    the teacher is detached) and detached per-token diagnostics ``token_kl`` (unclipped forward
    KL from q*), ``top1_agree`` (1.0 where the argmaxes of q* and p_S agree), ``student_entropy`` (of the
    temperature-scaled student) and ``target_kl`` (KL(q* ‖ q_1), the first view; 0 with one view). Reduce over
    valid tokens with a mask.
    """
    cfg.validate()
    temperature = validated_temperature(temperature)
    views = teacher_views(teacher_logits, cfg)
    for view in views:
        if student_logits.dim() < 2 or student_logits.shape != view.shape:
            raise ValueError(
                f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(view.shape)} "
                "must have the same shape [..., V]"
            )
    lead, vocab = student_logits.shape[:-1], student_logits.shape[-1]
    target_ids = validated_target_ids(target_ids, lead, vocab, cfg)
    outs = _ChunkedDistill.apply(
        student_logits.reshape(-1, vocab),
        tuple(v.detach().reshape(-1, vocab) for v in views),
        target_ids,
        cfg,
        temperature,
        torch.is_grad_enabled(),
    )
    return named_outputs(outs, lead)
