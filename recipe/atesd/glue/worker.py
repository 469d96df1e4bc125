"""verl glue: the actor worker that also hosts the colocated privileged teacher.

``ATESDWorker`` is verl 0.9.1's ``ActorRolloutRefWorker`` plus four driver-callable methods:

- ``init_teacher(settings)``   — once after ``init_model``: tokenizer, probe set, our loss function.
- ``set_exposure(α, window)``  — broadcast at every hold-window start (Dispatch.ONE_TO_ALL).
- ``distill_report()``         — what each rank used and measured during the last update.
- ``probe_signals()``          — ℓ (student NLL of probe references) and g (teacher log-prob of
                                 the unrevealed remainder), after each update.

The distillation loss runs *inside* the student's forward, through verl's logits-processor seam
(``distillation_use_topk``): verl hands us the temperature-scaled student logits of the packed
micro-batch; we run the teacher on ``c_T(α) ⊕ ŷ`` for the same micro-batch under ``no_grad`` and
compute the chunked per-token loss (``recipe.atesd.method.losses``). Full-vocabulary teacher logits
never leave the process.

Teacher weights (``distill.teacher_kind``):
- ``frozen`` — full fine-tuning: verl's fused reference model (initial weights) in this worker;
  LoRA: the actor module with adapters disabled (no extra memory; the papers' setting).
- ``live``   — the current actor weights.
- ``ema``    — the fused reference copy, moved toward the actor after each update by
  ``teacher ← (1−r)·teacher + r·student`` (full fine-tuning only).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.workers.engine_workers import ActorRolloutRefWorker

from recipe.atesd.method.losses import DistillLossConfig, distill_token_losses, ema_update_
from recipe.atesd.method.probe import ProbeSet
from recipe.atesd.method.prompts import ExposureConfig, teacher_prompt_ids
from recipe.atesd.method.scoring import (
    build_teacher_batch,
    packed_response_rows,
    sequence_token_logprobs,
    teacher_response_logits,
)

TOKEN_LOSS_KEY = "atesd_token_loss"
# Test/debug hook: when set, every micro-batch of the first update saves what the loss saw (both sides'
# response-row logits, mask, per-token loss, ids) to this folder, for the loss-parity test.
CAPTURE_DIR_VAR = "ATESD_CAPTURE_DIR"


@dataclass
class TeacherSettings:
    """What the driver sends to every worker once (plain values: crosses Ray)."""

    exposure: dict
    distill: dict
    probe_path: str | None
    probe_size: int | None
    probe_batch_size: int


@dataclass
class UpdateReport:
    """Per-rank accumulation over the micro-batches of one update (see ``distill_report``)."""

    alpha: float | None = None
    window_id: int | None = None
    loss_sum: float = 0.0
    n_tokens: int = 0
    kl_sum: float = 0.0
    agree_sum: float = 0.0
    entropy_sum: float = 0.0
    token_kl: list = field(default_factory=list)
    n_truncated: int = 0
    n_cut_segments: int = 0
    nonfinite_microbatches: int = 0
    teacher_seconds: float = 0.0
    loss_seconds: float = 0.0


class ATESDWorker(ActorRolloutRefWorker):
    """Actor + rollout (+ fused reference) worker that also scores as the privileged teacher."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_teacher(self, settings: TeacherSettings):
        from verl.utils import hf_tokenizer

        self._settings = settings
        self._exposure_cfg = ExposureConfig(**settings.exposure)
        # verl already divided the student logits by the rollout temperature; the teacher logits are
        # divided by the same per-sample temperature in ``_token_losses``, so the loss runs at 1.0.
        self._distill_cfg = DistillLossConfig(**settings.distill).validate()
        self._loss_cfg = replace(self._distill_cfg, temperature=1.0)
        self._tokenizer = hf_tokenizer(self.config.model.path)
        self._alpha: float | None = None
        self._window_id: int | None = None
        self._prompt_cache: dict[tuple, tuple[list[int], int]] = {}
        self._ground_cache: dict[float, float] = {}
        self._report = UpdateReport()
        self._updates = 0
        self._captured = 0
        kind = self._distill_cfg.teacher_kind
        if kind in ("frozen", "ema") and self.ref is None and not self._uses_lora():
            raise ValueError(f"distill.teacher_kind={kind} needs the fused reference model")
        self._probe = (
            ProbeSet.load(settings.probe_path, self._tokenizer, self._exposure_cfg, size=settings.probe_size)
            if settings.probe_path
            else None
        )
        self.actor.set_loss_fn(self._loss_fn)
        return True

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def set_exposure(self, alpha: float, window_id: int):
        if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
            raise ValueError(f"set_exposure: alpha={alpha} is outside [0, 1]")
        if alpha != self._alpha:
            self._prompt_cache.clear()
        self._alpha, self._window_id = float(alpha), int(window_id)
        return self._alpha, self._window_id

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def distill_report(self) -> UpdateReport:
        report, self._report = self._report, UpdateReport()
        return report

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def update_actor(self, data):
        """Distillation-only update: verl computes no log-probs, only calls our logits processor."""
        tu.assign_non_tensor(
            data, distillation_use_topk=True, distillation_only=True, calculate_entropy=False
        )
        self._report = UpdateReport(alpha=self._alpha, window_id=self._window_id)
        output = super().update_actor(data)
        self._updates += 1
        if self._distill_cfg.teacher_kind == "ema":
            ema_update_(
                self.ref.engine.module.parameters(),
                self.actor.engine.module.parameters(),
                self._distill_cfg.ema_rate,
            )
        return output

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def probe_signals(self) -> dict:
        """ℓ = mean student NLL of probe references; g = mean teacher log-prob of the unrevealed rest.

        With a fixed teacher (``frozen``, or LoRA adapters off) g depends on α only and is cached per α.
        """
        if self._probe is None:
            raise ValueError("probe.path is not set: the adaptive controller needs probe signals")
        t0 = time.perf_counter()
        student = self._probe_sums(
            self.actor.engine.module, lambda chunk: (chunk.student_prompts, chunk.references)
        )
        nll = float(-student[0] / student[1].clamp_min(1))
        t1 = time.perf_counter()
        fixed_teacher = self._distill_cfg.teacher_kind == "frozen"
        if not (fixed_teacher and self._alpha in self._ground_cache):
            max_len = self._distill_cfg.max_teacher_length
            with self._teacher_module() as teacher:
                sums = self._probe_sums(
                    teacher, lambda chunk: self._probe.teacher_view(chunk, self._alpha, max_len)
                )
            self._ground_cache[self._alpha] = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
        ground = self._ground_cache[self._alpha]
        if not fixed_teacher:
            self._ground_cache.clear()
        return {
            "probe_nll": nll,
            "teacher_ground": ground,
            "timing_s/probe_nll": t1 - t0,
            "timing_s/probe_ground": time.perf_counter() - t1,
        }

    def _probe_sums(self, module, view) -> torch.Tensor:
        """[Σ log p(target | prompt), #targets] over the probe set, sharded over ranks and all-reduced."""
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        sums = torch.zeros(2, dtype=torch.float64)
        with self.actor.engine.eval_mode(), torch.no_grad(), self._autocast():
            for chunk in self._probe.shard(rank, world, self._settings.probe_batch_size):
                prompts, targets = view(chunk)
                s, n = sequence_token_logprobs(
                    module, prompts, targets, self._tokenizer.pad_token_id, self._device()
                )
                sums += torch.stack([s, n])
        torch.distributed.all_reduce(sums)
        return sums

    # ----------------------------------------------------------------- the loss (in the forward)

    def _loss_fn(self, *, data, student_logits=None, model_output=None, dp_group=None):
        """verl calls this twice per micro-batch: as logits processor, then as the loss."""
        if student_logits is not None:
            return {TOKEN_LOSS_KEY: self._token_losses(student_logits.squeeze(0), data).unsqueeze(0)}
        token_loss = model_output[TOKEN_LOSS_KEY].values()
        # Σ over this micro-batch's response tokens / tokens of the whole mini-batch (all dp ranks),
        # × dp_size because FSDP averages gradients over ranks: micro-batch sums add to the batch mean.
        loss = token_loss.sum() / data["batch_num_tokens"] * data["dp_size"]
        if not torch.isfinite(loss):
            self._report.nonfinite_microbatches += (
                1  # verl skips the optimizer step on a non-finite grad norm
            )
        return loss, {}

    def _token_losses(self, logits: torch.Tensor, data) -> torch.Tensor:
        """Per-row loss for the packed micro-batch: non-zero only on response rows."""
        if self._alpha is None:
            raise RuntimeError("ATESD worker has no exposure: the trainer must call set_exposure first")
        t0 = time.perf_counter()
        responses = [r.tolist() for r in data["responses"].unbind()]
        response_mask = data["response_mask"].values().to(logits.device).bool()
        rows = packed_response_rows(data["input_ids"].offsets(), data["responses"].offsets().diff()).to(
            logits.device
        )
        teacher_prompts = [self._teacher_prompt(info) for info in tu.get(data, "extra_info")]
        batch = build_teacher_batch(teacher_prompts, responses, self._tokenizer.pad_token_id)
        with self._teacher_module() as teacher:
            teacher_logits = teacher_response_logits(teacher, batch, logits.device)
        teacher_logits = teacher_logits / _token_temperatures(data, logits.device)[:, None].to(
            teacher_logits.dtype
        )
        t1 = time.perf_counter()
        token_loss, diag = distill_token_losses(
            logits[rows],
            teacher_logits,
            self._loss_cfg,
            target_ids=data["responses"].values().to(logits.device),
        )
        token_loss = token_loss * response_mask
        self._maybe_capture(logits[rows], teacher_logits, response_mask, token_loss, batch, responses, data)
        out = torch.zeros(logits.shape[0], dtype=token_loss.dtype, device=logits.device)
        out = out.index_put((rows,), token_loss)
        self._accumulate(token_loss, diag, response_mask, t1 - t0, time.perf_counter() - t1)
        return out

    def _maybe_capture(self, student, teacher, mask, token_loss, batch, responses, data):
        folder = os.environ.get(CAPTURE_DIR_VAR)
        if not folder or self._updates > 0:
            return
        os.makedirs(folder, exist_ok=True)
        rank = torch.distributed.get_rank()
        torch.save(
            {
                "student_logits": student.detach().float().cpu(),
                "teacher_logits": teacher.detach().float().cpu(),
                "response_mask": mask.cpu(),
                "token_loss": token_loss.detach().float().cpu(),
                "teacher_input_ids": batch.input_ids,
                "teacher_attention_mask": batch.attention_mask,
                "responses": responses,
                "alpha": self._alpha,
                "window_id": self._window_id,
                "batch_num_tokens": float(data["batch_num_tokens"]),
                "dp_size": int(data["dp_size"]),
                "distill": self._distill_cfg,
            },
            os.path.join(folder, f"rank{rank}_mb{self._captured}.pt"),
        )
        self._captured += 1

    def _accumulate(self, token_loss, diag, mask, teacher_s, loss_s):
        r = self._report
        m = mask.float()
        r.loss_sum += float((token_loss.detach() * m).sum())
        r.n_tokens += int(m.sum())
        r.kl_sum += float((diag["token_kl"] * m).sum())
        r.agree_sum += float((diag["top1_agree"].float() * m).sum())
        r.entropy_sum += float((diag["student_entropy"] * m).sum())
        r.token_kl.extend(diag["token_kl"][mask].tolist())
        r.teacher_seconds += teacher_s
        r.loss_seconds += loss_s

    def _teacher_prompt(self, info: dict) -> list[int]:
        key = (info["id"], self._alpha)
        if key not in self._prompt_cache:
            prompt = teacher_prompt_ids(
                self._tokenizer,
                info["problem"],
                info["reference_solution"],
                self._alpha,
                self._exposure_cfg,
                max_len=self._distill_cfg.max_teacher_length,
                answer=info["answer"],
            )
            self._prompt_cache[key] = (prompt.ids, prompt.n_cut_segments)
        ids, n_cut = self._prompt_cache[key]
        self._report.n_truncated += int(n_cut > 0)
        self._report.n_cut_segments += n_cut
        return ids

    # ----------------------------------------------------------------- plumbing

    def _uses_lora(self) -> bool:
        lora = self.config.model.get("lora", {}) or {}
        return (lora.get("rank", 0) or self.config.model.get("lora_rank", 0) or 0) > 0

    def _teacher_module(self):
        """Context manager yielding the module that plays the teacher (see module docstring)."""
        kind = self._distill_cfg.teacher_kind
        if kind == "live":
            return nullcontext(self.actor.engine.module)
        if self._uses_lora():
            return _AdaptersOff(self.actor.engine)
        return nullcontext(self.ref.engine.module)

    def _device(self):
        from verl.utils.device import get_device_id

        return get_device_id()

    def _autocast(self):
        from verl.utils.device import get_device_name

        return torch.autocast(device_type=get_device_name(), dtype=torch.bfloat16)


class _AdaptersOff:
    """LoRA teacher: the actor module with its adapters disabled for the duration."""

    def __init__(self, engine):
        self._engine = engine
        self._ctx = None

    def __enter__(self):
        self._ctx = self._engine.disable_adapter()
        self._ctx.__enter__()
        return self._engine.module

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _token_temperatures(data, device) -> torch.Tensor:
    """The sampling temperature verl divided the student logits by, one per response token."""
    t = data["temperature"]
    lengths = data["responses"].offsets().diff().to(device)
    if not isinstance(t, torch.Tensor):
        return torch.full((int(lengths.sum()),), float(t), device=device)
    return torch.repeat_interleave(t.to(device, torch.float32).reshape(-1), lengths)
