"""verl glue: the actor worker that also hosts the colocated privileged teacher.

``ATESDWorker`` is verl 0.9.1's ``ActorRolloutRefWorker`` plus four driver-callable methods:

- ``init_teacher(settings)``   — once after ``init_model``: tokenizer, probe set, our loss function.
- ``set_exposure(table)``     — the window's :class:`ExposureTable` (α per difficulty bucket, bucket edges),
                                 broadcast once per hold window (Dispatch.ONE_TO_ALL); row r's teacher prompt
                                 of that window uses α_r = table α of bucket(d_r), d_r the row's difficulty
                                 from its ``extra_info`` (docs/method.md §2.4). One bucket (``granularity:
                                 batch``, the default): every row gets the window's one α, d is never read.
- ``distill_report()``         — what each rank used (the table: the one consistency check) and measured
                                 during the last update.
- ``probe_signals(ground)``    — ℓ (student NLL of probe references) and, with ``ground``, g (teacher
                                 log-prob of the unrevealed remainder, each probe row at its own bucket's
                                 α), after each update.

The distillation loss is verl's loss function of the update, reached through one seam that says what it is:
``verl_patches/student_output_loss.py`` (applied when this module is imported). :class:`StudentOutputLoss`
declares what it reads — the student's temperature-scaled logits ``[nnz, V]``, or with ``distill.fused`` its
final hidden states h/τ ``[nnz, H]`` — and verl's forward step hands exactly that, by name, to the loss, which
it calls once per micro-batch. The loss runs the teacher on ``c_T(α) ⊕ ŷ`` for the same micro-batch under
``no_grad`` and computes the chunked per-token loss (``recipe/atesd/method/losses.py``). Full-vocabulary teacher
logits never leave the process.

``distill.fused`` (default): around each student forward of the update (``StudentOutputLoss.student_forward``)
the LM head returns its input and records a copy of its weight W inside its forward, where FSDP has gathered it
(``scoring.hidden_states_as_logits``); the teacher returns hidden states on response rows only
(``scoring.teacher_response_hidden``: its head weight is the student's when the head module is shared — LoRA
adapters off, live actor — else one more copy). ``method/fused_loss.py`` projects and scores chunk by chunk:
neither model's [T, V] logits exist.

Teacher weights (``teacher.kind``, placed by ``recipe/atesd/method/teacher.py::teacher_weights``):
``reference`` — verl's fused reference model in this worker (``frozen`` full fine-tuning; ``ema`` moves
it toward the actor after each update); ``adapters_off`` — the actor with LoRA adapters disabled
(``frozen`` with LoRA, the papers' setting); ``actor`` — the current actor weights (``live``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import torch
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.workers.engine_workers import ActorRolloutRefWorker

from recipe.atesd.data.donor_rows import donor_rows
from recipe.atesd.glue.config_check import uses_lora
from recipe.atesd.method.difficulty import ExposureTable
from recipe.atesd.method.fused_loss import fused_distill_loss
from recipe.atesd.method.losses import DistillLossConfig, distill_token_losses
from recipe.atesd.method.probe import ProbeSet
from recipe.atesd.method.prompts import TEACHER_CONTEXTS, TeacherPromptConfig, row_teacher_prompt
from recipe.atesd.method.scoring import (
    TeacherBatch,
    build_teacher_batch,
    hidden_states_as_logits,
    packed_response_rows,
    sequence_token_logprobs,
    teacher_response_hidden,
    teacher_response_logits,
)
from recipe.atesd.method.teacher import TeacherConfig, teacher_kind, teacher_weights
from recipe.atesd.method.teacher_targets import teacher_target
from recipe.atesd.method.token_weights import token_weighting
from verl_patches import student_output_loss

student_output_loss.apply()  # the seam StudentOutputLoss goes through, in every process that holds this worker


@dataclass
class TeacherSettings:
    """What the driver sends to every worker once (plain values: crosses Ray)."""

    teacher_prompt: dict
    teacher: dict
    distill: dict
    probe_path: str | None
    probe_size: int | None
    probe_batch_size: int
    difficulty_signal: str  # controller.difficulty_signal: places a row in a bucket
    difficulty_level_key: str  # controller.difficulty_level_key (its one default: ControllerConfig)
    train_files: list[str]  # data.train_files: the donor pool of teacher_context other_reference


@dataclass
class UpdateReport:
    """Per-rank accumulation over the micro-batches of one update (see ``distill_report``)."""

    exposure: ExposureTable | None = None  # the table this rank built its teacher prompts with
    loss_sum: float = 0.0
    weight_sum: float = 0.0  # Σ w_n over the valid response tokens (distill.token_weighting)
    target_kl_sum: float = 0.0  # Σ KL(q* ‖ q_1) over the valid response tokens (distill.target)
    n_tokens: int = 0
    agree_sum: float = 0.0
    entropy_sum: float = 0.0
    token_kl: list = field(default_factory=list)
    n_truncated: int = 0
    n_cut_segments: int = 0
    nonfinite_microbatches: int = 0
    teacher_seconds: float = 0.0
    loss_seconds: float = 0.0
    bucket_kl_sum: list = field(default_factory=list)  # K > 1 only: Σ token KL of bucket k's response tokens
    bucket_tokens: list = field(default_factory=list)  # K > 1 only: bucket k's response tokens


class ATESDWorker(ActorRolloutRefWorker):
    """Actor + rollout (+ fused reference) worker that also scores as the privileged teacher."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_teacher(self, settings: TeacherSettings):
        from verl.utils import hf_tokenizer

        self._settings = settings
        self._prompt_cfg = TeacherPromptConfig(**settings.teacher_prompt)
        self._teacher_cfg = TeacherConfig(**settings.teacher).validate()
        self._kind = teacher_kind(self._teacher_cfg.kind)
        self._weights = teacher_weights(self._teacher_cfg.kind, uses_lora(self.config.model))
        self._distill_cfg = DistillLossConfig(**settings.distill).validate()
        self._tokenizer = hf_tokenizer(self.config.model.path)
        self._difficulty = (settings.difficulty_signal, settings.difficulty_level_key)
        self._exposure: ExposureTable | None = None  # from the last set_exposure
        # (row id, teacher context, α) → (c_T ids, cut segments), this window
        self._prompt_cache: dict[tuple[str, str, float], tuple[list[int], int]] = {}
        # (α per bucket, edges) → g, only while the teacher's weights never change
        self._ground_cache: dict[tuple, float] = {}
        self._report = UpdateReport()
        self._head_capture = None  # set by StudentOutputLoss.student_forward around a fused student forward
        if self._weights == "reference" and self.ref is None:
            raise ValueError(f"teacher.kind={self._teacher_cfg.kind} needs the fused reference model")
        self._probe = (
            ProbeSet.load(settings.probe_path, self._tokenizer, self._prompt_cfg, size=settings.probe_size)
            if settings.probe_path
            else None
        )
        self._donors = (  # row id → its donor's texts, only for a context that shows a donor (other_reference)
            donor_rows(settings.train_files, settings.probe_path, self._prompt_cfg.donor_seed)
            if any("donor_problem" in TEACHER_CONTEXTS[context].needs for context, _ in self._views)
            else {}
        )
        if self._probe is not None and self._donors:
            self._probe.rows = [self._with_donor(row) for row in self._probe.rows]
        self.actor.set_loss_fn(StudentOutputLoss(self))
        return True

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def set_exposure(self, table: ExposureTable) -> None:
        """The controller's α per bucket for hold window ``table.window_id`` (decided, clipped and logged there)."""
        self._exposure = table
        self._prompt_cache.clear()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def distill_report(self) -> UpdateReport:
        report, self._report = self._report, UpdateReport()
        return report

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def update_actor(self, data):
        """verl's update with our loss (:class:`StudentOutputLoss`); then the teacher kind's after-update step."""
        self._report = UpdateReport(exposure=self._exposure)
        output = super().update_actor(data)
        if self._kind.after_update is not None:  # e.g. ema (recipe/atesd/method/teacher.py::TEACHER_KINDS)
            with self._teacher_module() as teacher:
                self._kind.after_update(
                    teacher.parameters(), self.actor.engine.module.parameters(), self._teacher_cfg
                )
        return output

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def probe_signals(self, ground: bool = True) -> dict:
        """ℓ = mean student NLL of probe references; with ``ground``, g = mean teacher log-prob of the
        unrevealed rest, each probe row at its own bucket's α (docs/method.md §2.4; one α for every row with
        one bucket), the baseline before the first update needs ℓ only.

        With a fixed teacher (``frozen``) g depends on the table's α's only and is cached per table.
        """
        if self._probe is None:
            raise ValueError("probe.path is not set: the adaptive controller needs probe signals")
        t0 = time.perf_counter()
        student = self._probe_sums(
            self.actor.engine.module, lambda chunk: (chunk.student_prompts, chunk.references)
        )
        nll = float(-student[0] / student[1].clamp_min(1))
        t1 = time.perf_counter()
        signals = {"probe_nll": nll, "timing_s/probe_nll": t1 - t0}
        if not ground:
            return signals
        table = self._require_exposure()
        key = (table.bucket_alphas, table.edges)
        fixed_teacher = not self._kind.moves  # live / ema weights change every update
        if fixed_teacher and key in self._ground_cache:
            g = self._ground_cache[key]
        else:
            max_len = self._prompt_cfg.max_length
            with self._teacher_module() as teacher:
                sums = self._probe_sums(
                    teacher,
                    lambda chunk: self._probe.teacher_view(chunk, self._row_alphas(chunk.rows)[0], max_len),
                )
            g = float(sums[0] / sums[1]) if sums[1] > 0 else 0.0
            if fixed_teacher:
                self._ground_cache[key] = g
        signals.update({"teacher_ground": g, "timing_s/probe_ground": time.perf_counter() - t1})
        return signals

    def _probe_sums(self, module, view) -> torch.Tensor:
        """[Σ log p(target | prompt), #targets] over the probe set, sharded over ranks and all-reduced.
        Every rank runs the same number of forwards (``ProbeSet.shard`` pads; ``sequence_token_logprobs``
        always runs one): each forward is an FSDP collective."""
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        sums = torch.zeros(2, dtype=torch.float64)
        with self.actor.engine.eval_mode(), torch.no_grad(), self._autocast():
            for chunk in self._probe.shard(rank, world, self._settings.probe_batch_size):
                prompts, targets = view(chunk)
                s, n = sequence_token_logprobs(
                    module,
                    prompts,
                    targets,
                    self._tokenizer.pad_token_id,
                    self._device(),
                    counted=chunk.counted,
                )
                sums += torch.stack([s, n])
        torch.distributed.all_reduce(sums)
        return sums

    # ----------------------------------------------------------------- the loss (in the forward)

    def _loss(self, student: torch.Tensor, data) -> torch.Tensor:
        """The micro-batch's loss: Σ over its response tokens / tokens of the whole mini-batch (all dp ranks),
        × dp_size because FSDP averages gradients over ranks: micro-batch sums add to the batch mean."""
        token_loss = self._token_losses(student, data)
        loss = token_loss.sum() / data["batch_num_tokens"] * data["dp_size"]
        if not torch.isfinite(loss):
            self._report.nonfinite_microbatches += (
                1  # verl skips the optimizer step on a non-finite grad norm
            )
        return loss

    @contextmanager
    def _student_forward(self, module):
        """With ``distill.fused``: the LM head of ``module`` returns its input and records W (module docstring)."""
        if not self._distill_cfg.fused:
            yield
            return
        with hidden_states_as_logits(module) as capture:
            self._head_capture = capture
            try:
                yield
            finally:
                self._head_capture = None

    @property
    def _views(self) -> list[tuple[str, float | None]]:
        """(teacher context, fixed α or None = the row's α) of each view of ``distill.target``
        (``recipe/atesd/method/teacher_targets.py``)."""
        return [
            (view.context or self._prompt_cfg.teacher_context, view.alpha)
            for view in teacher_target(self._distill_cfg.target).views
        ]

    def _require_exposure(self) -> ExposureTable:
        if self._exposure is None:
            raise RuntimeError("ATESD worker has no exposure: the trainer must call set_exposure first")
        return self._exposure

    def _row_alphas(self, infos) -> tuple[list[float], list[int]]:
        """(α_r, bucket_r) of every row: α_r = the window's α of the row's difficulty bucket (§2.4)."""
        return self._require_exposure().row_alphas(infos, *self._difficulty)

    def _token_losses(self, logits: torch.Tensor, data) -> torch.Tensor:
        """Per-row loss for the packed micro-batch: non-zero only on response rows.

        ``logits``: the student's temperature-scaled logits ``[nnz, V]``, or with ``distill.fused`` its final
        hidden states h/τ ``[nnz, H]`` (what :class:`StudentOutputLoss` declares)."""
        t0 = time.perf_counter()
        dev = logits.device
        responses = [r.tolist() for r in data["responses"].unbind()]
        response_mask = data["response_mask"].values().to(dev).bool()
        rows = packed_response_rows(data["input_ids"].offsets(), data["responses"].offsets().diff()).to(dev)
        target_ids = data["responses"].values().to(dev)
        lengths = data["responses"].offsets().diff()
        weighting = token_weighting(self._distill_cfg.token_weighting)
        weights = weighting.weights(
            response_mask, lengths.to(dev), self._distill_cfg
        )  # w_n (method/token_weights.py)
        batches, buckets = self._teacher_batches(tu.get(data, "extra_info"), responses)
        temperatures = _token_temperatures(data, dev)[:, None]
        if self._distill_cfg.fused:
            if self._head_capture is None:
                raise RuntimeError(
                    "distill.fused: the loss ran outside StudentOutputLoss.student_forward (no head weight)"
                )
            head = self._head_capture.pop()  # this micro-batch's W, differentiable back to the head
            t_hidden, t_head = [], None  # one [N, H] per view of distill.target, all through the head t_head
            with self._teacher_module() as teacher:
                for batch in batches:  # the head's W is copied once per micro-batch, not once per view
                    hidden, t_head = teacher_response_hidden(
                        teacher, batch, dev, self._head_capture, head, copied=t_head
                    )
                    t_hidden.append(hidden.to(t_head.dtype) / temperatures.to(t_head.dtype))
            t1 = time.perf_counter()
            # the head's dtype, as autocast / the head's own matmul would use (h is bf16 under FSDP's bf16)
            token_loss, diag = fused_distill_loss(
                logits[rows].to(head.dtype),
                head,
                t_hidden,
                t_head,
                self._distill_cfg,
                weights=weights,
                target_ids=target_ids,
            )
            del head, t_head
        else:
            with self._teacher_module() as teacher:
                views = [teacher_response_logits(teacher, batch, dev) for batch in batches]
            teacher_logits = [v / temperatures.to(v.dtype) for v in views]
            t1 = time.perf_counter()
            token_loss, diag = distill_token_losses(
                logits[rows], teacher_logits, self._distill_cfg, target_ids=target_ids
            )
            token_loss = token_loss * weights.to(token_loss.dtype)
        out = torch.zeros(logits.shape[0], dtype=token_loss.dtype, device=logits.device)
        out = out.index_put((rows,), token_loss)
        self._accumulate(token_loss, diag, response_mask, weights, t1 - t0, time.perf_counter() - t1)
        if self._exposure.edges:
            self._accumulate_buckets(diag["token_kl"], response_mask, buckets, lengths.cpu())
        return out

    def _teacher_batches(self, infos, responses) -> tuple[list[TeacherBatch], list[int]]:
        """The teacher's padded batch c_T ⊕ ŷ_r of a micro-batch per view of ``distill.target`` (a view's context
        at its fixed α, or at the row's α_r), and each row's bucket."""
        alphas, buckets = self._row_alphas(infos)
        batches = []
        for context, fixed in self._views:
            prompts = [
                self._teacher_prompt(info, alpha if fixed is None else fixed, context)
                for info, alpha in zip(infos, alphas, strict=True)
            ]
            batches.append(build_teacher_batch(prompts, responses, self._tokenizer.pad_token_id))
        return batches, buckets

    def _accumulate_buckets(self, token_kl, mask, buckets, lengths) -> None:
        """Σ token KL and #tokens per bucket over this micro-batch's response tokens (``distill/kl_mean_bucket_*``)."""
        r, k_count = self._report, len(self._exposure.bucket_alphas)
        if not r.bucket_tokens:
            r.bucket_kl_sum, r.bucket_tokens = [0.0] * k_count, [0] * k_count
        token_bucket = torch.repeat_interleave(torch.tensor(buckets), lengths)
        m = mask.detach().cpu().double()
        kl = torch.bincount(token_bucket, weights=token_kl.detach().cpu().double() * m, minlength=k_count)
        n = torch.bincount(token_bucket, weights=m, minlength=k_count)
        for k in range(k_count):
            r.bucket_kl_sum[k] += float(kl[k])
            r.bucket_tokens[k] += int(n[k])

    def _accumulate(self, token_loss, diag, mask, weights, teacher_s, loss_s):
        r = self._report
        m = mask.float()
        r.loss_sum += float((token_loss.detach() * m).sum())
        r.weight_sum += float((weights * mask).sum())
        r.target_kl_sum += float((diag["target_kl"].double() * mask).sum())
        r.n_tokens += int(m.sum())
        r.agree_sum += float((diag["top1_agree"].float() * m).sum())
        r.entropy_sum += float((diag["student_entropy"] * m).sum())
        r.token_kl.extend(diag["token_kl"][mask].tolist())
        r.teacher_seconds += teacher_s
        r.loss_seconds += loss_s

    def _teacher_prompt(self, info: dict, alpha: float, context: str) -> list[int]:
        """c_T of one row by teacher context ``context`` at ``alpha``, built once per (row, context, α) in a hold
        window (``set_exposure`` empties the cache)."""
        key = (info["id"], context, alpha)
        if key not in self._prompt_cache:
            row = self._with_donor(info) if self._donors else info
            cfg = self._prompt_cfg
            if context != cfg.teacher_context:
                cfg = replace(cfg, teacher_context=context)
            prompt = row_teacher_prompt(self._tokenizer, row, alpha, cfg, cfg.max_length)
            self._prompt_cache[key] = (prompt.ids, prompt.n_cut_segments)
        ids, n_cut = self._prompt_cache[key]
        self._report.n_truncated += int(n_cut > 0)
        self._report.n_cut_segments += n_cut
        return ids

    def _with_donor(self, info: dict) -> dict:
        """The row with its donor's problem and reference (``recipe/atesd/data/donor_rows.py``)."""
        if info["id"] not in self._donors:
            raise KeyError(
                f"row id {info['id']!r} has no donor: it is neither in data.train_files nor in probe.path "
                "(other_reference pairs every training and probe row)"
            )
        return {**info, **self._donors[info["id"]]}

    # ----------------------------------------------------------------- plumbing

    def _teacher_module(self):
        """Context manager yielding the module that plays the teacher (see module docstring)."""
        if self._weights == "actor":
            return nullcontext(self.actor.engine.module)
        if self._weights == "adapters_off":
            return _AdaptersOff(self.actor.engine)
        return nullcontext(self.ref.engine.module)

    def _device(self):
        from verl.utils.device import get_device_id

        return get_device_id()

    def _autocast(self):
        from verl.utils.device import get_device_name

        return torch.autocast(device_type=get_device_name(), dtype=torch.bfloat16)


class StudentOutputLoss:
    """The worker's loss as verl's loss function, through the seam of ``verl_patches/student_output_loss.py``:
    ``student_output`` says what verl hands it (``"hidden"`` with ``distill.fused``, else ``"logits"``),
    ``student_forward`` wraps each student forward, and verl calls it once per micro-batch as the loss."""

    def __init__(self, worker: ATESDWorker):
        self._worker = worker
        self.student_output = "hidden" if worker._distill_cfg.fused else "logits"

    def student_forward(self, module):
        return self._worker._student_forward(module)

    def __call__(self, *, model_output, data, dp_group=None):
        return self._worker._loss(model_output[f"student_{self.student_output}"], data), {}


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
