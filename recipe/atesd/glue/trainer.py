"""The ATESD trainer: verl 0.9.1's V1 synchronous trainer with the ATESD step.

One update (docs/method.md §1–2): verl's own ``_step_once`` with two hooks overridden, ``_compute_old_log_prob``
(skipped) and ``_update_actor`` (the ATESD step: α, the distillation update, the probe, the controller):

    ŷ ~ π_θ(·|c_S)                        rollout (vLLM), task reward for logging only
    α_t = controller(s_t)                 new hold window? broadcast α_t once to every teacher worker
                                          (an ExposureTable: one α per difficulty bucket, docs/method.md §2.4)
    θ ← θ − η ∇ 1/|ŷ| Σ_n D(p_T(·|c_T(α_t,r), ŷ<n) ‖ p_θ(·|c_S, ŷ<n))   (inside the workers; row r's bucket α)
    ℓ_{t+1}, g_{t+1} = probe(θ, α_t)      progress and teacher-grounding signals
    controller.observe(t, stats)          delayed learning-progress reward → REINFORCE

verl's ``fit()`` (validation, checkpoints, logging, weight sync to vLLM) is inherited unchanged;
only the two hooks of the step, the worker class and the checkpoint extras are ours.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from datetime import UTC, datetime

import numpy as np
import ray
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.utils.debug import marked_timer

from recipe.atesd.data.donor_rows import DONORS_FILE, donor_rows
from recipe.atesd.glue import sweep
from recipe.atesd.glue.config_check import plain, resolve_bucket_edges, uses_lora
from recipe.atesd.glue.controller_actor import spawn_controller
from recipe.atesd.glue.lora_checkpoint import check_base_model, record_base_model
from recipe.atesd.glue.sync_trainer import HistorySyncTrainer, record_start_model
from recipe.atesd.glue.worker import ATESDWorker, TeacherSettings
from recipe.atesd.method.controller import ControllerConfig, StepStats
from recipe.atesd.method.difficulty import ExposureTable, bucket_occupancy, row_buckets
from recipe.atesd.method.prompts import TEACHER_CONTEXTS
from recipe.atesd.method.teacher import teacher_weights
from recipe.atesd.tools.run_dirs import CONFIG, DONE, METRICS, RECORD, move_aside, write_json

STATE_FILE = "atesd_state.pt"


@register_trainer("atesd")
class ATESDTrainer(HistorySyncTrainer):
    mode_name = "atesd"  # synchronous like verl's PPOTrainerSync (recipe/atesd/glue/sync_trainer.py)

    # ------------------------------------------------------------------ the algorithm

    # verl's ``_step_once`` (trainer_base.py) runs the update: 1 rollout (``gen``), 2 task reward, 3 balance,
    # 4 ``_compute_old_log_prob``, 7 advantage (GRPO's, logged only), 9 ``_update_actor``. ATESD overrides the
    # two hooks that differ: 4 is skipped (the distillation loss needs no old log-probs) and 9 is the ATESD step
    # below. Steps 5, 6, 8 (reference log-probs, critic) are off: ATESD sets no KL loss and no critic
    # (``use_reference_policy`` and ``use_critic`` are False; recipe/atesd/glue/config_check.py).

    def _compute_old_log_prob(self, batch, metrics: dict):
        """Step 4 of verl's ``_step_once``: not needed, the distillation loss reads no old log-probs."""
        return batch

    def _update_actor(self, batch, metrics: dict):
        """Step 9 of verl's ``_step_once``: one ATESD update (module docstring). Steps are named for the method."""
        timing_raw = self._step_timing
        t = self.global_steps - 1  # the controller counts updates from 0
        decision = self._expose(t, metrics, timing_raw)
        if len(self._bucket_edges) > 0:
            metrics.update(self._bucket_batch_metrics(batch))
        report = self._distill(batch, decision, metrics)
        signals = self._probe(metrics, timing_raw)
        self._observe(t, report, signals, metrics, timing_raw)
        return batch

    def _step_once(self, metrics: dict, timing_raw: dict, sample_batch_size: int):
        """verl's step, unchanged; ``timing_raw`` is kept for the ATESD step's own timers."""
        self._step_timing = timing_raw
        return super()._step_once(metrics, timing_raw, sample_batch_size)

    def _expose(self, t: int, metrics: dict, timing_raw: dict):
        """α_t from the controller (its one home); at a window start — or on the first step of a (resumed)
        run, whose workers hold nothing yet — its table (α per bucket, the run's edges) is broadcast once to
        every teacher worker."""
        with marked_timer("controller_decide", timing_raw, color="purple"):
            decision = ray.get(self.controller.decide.remote(t))
        if decision.window_start or not self._workers_exposed:
            with marked_timer("exposure_broadcast", timing_raw, color="purple"):
                self.actor_rollout_wg.set_exposure(exposure_table(decision, self._bucket_edges))
            self._workers_exposed = True
        metrics.update(
            {
                "exposure/alpha": decision.alpha,
                "exposure/window": decision.window_id,
                "exposure/window_start": float(decision.window_start),
                "exposure/beta_a": decision.beta_a,
                "exposure/beta_b": decision.beta_b,
            }
        )
        if len(self._bucket_edges) > 0:
            metrics.update({f"exposure/alpha_bucket_{k}": a for k, a in enumerate(decision.bucket_alphas)})
        return decision

    def _bucket_batch_metrics(self, batch) -> dict:
        """``exposure/occupancy_bucket_*`` and ``exposure/accuracy_bucket_*`` of this step's rows (verl's
        TransferQueue holds them; padding rows of ``_balance_batch`` excluded)."""
        import transfer_queue as tq
        from verl.utils import tensordict_utils as tu

        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_info", "rm_scores"]
        )
        real = [not tag.get("is_padding", False) for tag in batch.tags]
        infos = [info for info, keep in zip(tu.get(data, "extra_info"), real, strict=True) if keep]
        scores = [s for s, keep in zip(data["rm_scores"].sum(dim=1).tolist(), real, strict=True) if keep]
        cfg = self.config.controller
        buckets = row_buckets(infos, self._bucket_edges, cfg.difficulty_signal, cfg.difficulty_level_key)
        return bucket_batch_metrics(buckets, scores, len(self._bucket_edges) + 1)

    def _distill(self, batch, decision, metrics: dict) -> dict:
        """Teacher scores ŷ under c_T(α_t); the student takes one distillation update in the workers, through
        verl's own ``_update_actor`` (its mini-batch, epoch, seed and temperature settings, ``actor/*`` metrics)."""
        with marked_timer("distill_update", self._step_timing, color="red"):
            super()._update_actor(batch, metrics)
            reports = self.actor_rollout_wg.distill_report()
        _check_workers([r.exposure for r in reports], exposure_table(decision, self._bucket_edges))
        summary = _summarise(reports, metrics.get("actor/grad_norm", float("nan")))
        self._skipped_steps += int(summary["distill/skipped"])
        summary["distill/skipped_total"] = float(self._skipped_steps)
        metrics.update(summary)
        return summary

    def _probe(self, metrics: dict, timing_raw: dict) -> dict:
        """ℓ (student NLL of probe references) and g (teacher log-prob of the unrevealed rest)."""
        with marked_timer("probe", timing_raw, color="cyan"):
            signals = self.actor_rollout_wg.probe_signals()[0]
        metrics.update({"probe/nll": signals["probe_nll"], "probe/teacher_ground": signals["teacher_ground"]})
        timing_raw.update(
            {k.removeprefix("timing_s/"): v for k, v in signals.items() if k.startswith("timing_s/")}
        )
        return signals

    def _observe(self, t: int, report: dict, signals: dict, metrics: dict, timing_raw: dict) -> None:
        """Hand update t's statistics to the controller; a skipped (non-finite) step reuses the last finite ones."""
        if not report["distill/skipped"]:
            self._last_finite = (
                report["distill/loss"],
                report["distill/top1_disagreement"],
                -report["distill/student_entropy"],
            )
        loss, mismatch, confidence = self._last_finite
        stats = StepStats(
            distill_loss=loss,
            mismatch=mismatch,
            probe_nll=signals["probe_nll"],
            teacher_ground=signals["teacher_ground"],
            self_confidence=confidence,
        )
        with marked_timer("controller_observe", timing_raw, color="purple"):
            metrics.update(ray.get(self.controller.observe.remote(t, stats)))

    # ------------------------------------------------------------------ plumbing: set-up

    def _init_resource_pool_mgr(self):
        """verl's pools, with our worker class; a fused reference copy when the teacher needs one."""
        super()._init_resource_pool_mgr()
        for role in (Role.ActorRollout, Role.ActorRolloutRef):
            self.role_worker_mapping.pop(role, None)
            self.mapping.pop(role, None)
        role = Role.ActorRolloutRef if self._teacher_needs_own_weights() else Role.ActorRollout
        self.role_worker_mapping[role] = ray.remote(ATESDWorker)
        self.mapping[role] = "global_pool"

    def _build_replay_buffer(self):
        """verl's replay buffer, polled every ``rollout_poll_interval_s``. verl 0.9.1 fixes the poll of
        ``ReplayBuffer.sample`` at 2.0 s (``replay_buffer.py::_wait_for_next_poll``), so every rollout took
        a whole number of 2 s quanta however fast it was (docs/cpu.md, "Generation speed")."""
        buffer = super()._build_replay_buffer()
        if not hasattr(buffer, "poll_interval"):
            raise AttributeError(
                f"{type(buffer).__name__} has no poll_interval: re-check verl's replay buffer"
            )
        buffer.poll_interval = float(self.config.rollout_poll_interval_s)
        return buffer

    def _teacher_needs_own_weights(self) -> bool:
        lora = uses_lora(self.config.actor_rollout_ref.model)
        return teacher_weights(self.config.teacher.kind, lora) == "reference"

    def init(self):
        self._setup()  # loads the checkpoint: global_steps is the resume step from here on
        self._arms = sweep.resolve_arms(self.config)
        if self._arms:  # sweep mode: each arm is set up in fit(), from the state saved here
            self._save_initial_state()
            return
        self._open_history()
        self._init_atesd()
        self.on_init_end()

    def _init_atesd(self):
        cfg = self.config
        settings = TeacherSettings(
            teacher_prompt=plain(cfg.teacher_prompt),
            teacher=plain(cfg.teacher),
            distill=plain(cfg.distill),
            probe_path=cfg.probe.path,
            probe_size=cfg.probe.size,
            probe_batch_size=cfg.probe.batch_size,
            difficulty_signal=cfg.controller.difficulty_signal,
            difficulty_level_key=cfg.controller.difficulty_level_key,
            train_files=list(cfg.data.train_files)
            if not isinstance(cfg.data.train_files, str)
            else [cfg.data.train_files],
        )
        self.actor_rollout_wg.init_teacher(settings)
        if "donor_problem" in TEACHER_CONTEXTS[cfg.teacher_prompt.teacher_context].needs:
            record_donors(
                cfg.trainer.default_local_dir,
                settings.train_files,
                cfg.probe.path,
                cfg.teacher_prompt.donor_seed,
            )
        if not self._arms:  # a sweep's one controller actor is started in _save_initial_state
            self.controller = spawn_controller()
        ray.get(
            self.controller.start.remote(
                plain(cfg.controller), self.total_training_steps, cfg.controller_seed
            )
        )
        self._workers_exposed = False  # fresh workers: the first step broadcasts its window's α
        # computed once, before training, so a bucket keeps its meaning; a resume checks the checkpoint's
        self._bucket_edges = resolve_bucket_edges(
            ControllerConfig.from_mapping(plain(cfg.controller)), cfg.data.train_files
        )
        self._skipped_steps = 0
        self._last_finite = (0.0, 0.0, 0.0)
        if self.global_steps > 0:
            self._restore_atesd_state()
        else:  # ℓ_0 before the first update (no teacher pass: g_0 enters no reward)
            baseline = self.actor_rollout_wg.probe_signals(ground=False)[0]
            ray.get(self.controller.observe_baseline.remote(baseline["probe_nll"]))

    # ------------------------------------------------------------------ plumbing: sweep mode

    def fit(self, agent_loop_manager):
        """verl's ``fit()``; in sweep mode once per arm, the stack put back to its start before each
        (recipe/atesd/glue/sweep.py)."""
        if not self._arms:
            return super().fit(agent_loop_manager)
        for n, arm in enumerate(self._arms, 1):
            state = sweep.arm_state(arm)
            print(
                f"[atesd] sweep arm {n}/{len(self._arms)}: {arm.name} ({state}) in {arm.directory}",
                flush=True,
            )
            if state == "done":
                continue
            if state == "incomplete":
                print(f"[atesd] sweep arm {arm.name}: earlier attempt moved to {move_aside(arm.directory)}")
            started, t0 = datetime.now(UTC), time.monotonic()
            self._start_arm(arm)
            reset_s = time.monotonic() - t0
            super().fit(agent_loop_manager)
            self.logger.finish()
            self.logger = None  # finished: verl's task runner finishes only a logger still open
            write_json(arm.directory / DONE, sweep.done_record(arm, started, reset_s, time.monotonic() - t0))

    def _save_initial_state(self):
        """The actor as the stack started it (weights, optimiser, schedule, RNG: verl's checkpoint) and the
        training dataloader before its first batch (its sampler's generator: the data order)."""
        self._initial_state = str(sweep.initial_state_dir(self.config) / "actor")
        self.actor_rollout_wg.save_checkpoint(self._initial_state, None, 0, max_ckpt_to_keep=None)
        self._initial_data = self.train_dataloader.state_dict()
        self.controller = spawn_controller()

    def _start_arm(self, arm):
        """Put the stack back to the state a fresh run of ``arm`` starts in (recipe/atesd/glue/sweep.py), in
        ``_setup``'s order: rollout replicas asleep, actor state loaded, then ATESD's set-up and the weight sync."""
        arm.directory.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(arm.config, arm.directory / CONFIG, resolve=True)
        self.config = arm.config
        self.global_steps = 0
        self.checkpoint_manager.sleep_replicas()
        self.actor_rollout_wg.load_checkpoint(self._initial_state, del_local_after_load=False)
        self.train_dataloader.load_state_dict(self._initial_data)  # as verl resumes a dataloader
        self.train_dataloader_it = None  # the next batch comes from a new iterator over the loaded state
        self._init_dump_executor()  # fit() shut the last one down
        model = record_start_model(self.config)
        write_json(arm.directory / RECORD, sweep.arm_record(arm, model))
        self._open_history(path=str(arm.directory / METRICS))
        self._init_atesd()
        self.on_init_end()

    # ------------------------------------------------------------------ plumbing: checkpoints

    def _save_checkpoint(self):
        """Controller + ATESD driver state go into the step folder before verl marks it complete."""
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        os.makedirs(folder, exist_ok=True)
        save_atesd_state(
            folder,
            ray.get(self.controller.state_dict.remote()),
            self._skipped_steps,
            self._last_finite,
            self._bucket_edges,
        )
        if self._adapters_only():
            record_base_model(folder, self.config.actor_rollout_ref.model.path)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        self._resume_folder = None
        if self.global_steps > 0:
            trainer = self.config.trainer
            self._resume_folder = (
                trainer.resume_from_path
                if trainer.resume_mode == "resume_path"
                else os.path.join(trainer.default_local_dir, f"global_step_{self.global_steps}")
            )
            if self._adapters_only():  # the base weights came from model.path, not from the checkpoint
                check_base_model(self._resume_folder, self.config.actor_rollout_ref.model.path)

    def _adapters_only(self) -> bool:
        """verl saves only the LoRA entries (``actor.checkpoint.save_lora_only`` on a LoRA actor):
        recipe/atesd/glue/lora_checkpoint.py ties such a checkpoint to its base model."""
        ref = self.config.actor_rollout_ref
        return uses_lora(ref.model) and bool(ref.actor.checkpoint.get("save_lora_only", False))

    def _restore_atesd_state(self):
        state = load_atesd_state(self._resume_folder)
        saved = tuple(state["bucket_edges"])
        if saved != tuple(self._bucket_edges):
            raise ValueError(
                f"resuming from {self._resume_folder}: its difficulty bucket edges {list(saved)} differ from this "
                f"run's {list(self._bucket_edges)}: controller.granularity, controller.num_buckets, "
                "controller.bucket_edges, controller.difficulty_signal or data.train_files changed"
            )
        ray.get(self.controller.load_state_dict.remote(state["controller"]))
        self._skipped_steps = state["skipped_steps"]
        self._last_finite = tuple(state["last_finite"])


# ---------------------------------------------------------------------- helpers


def save_atesd_state(folder: str, controller: dict, skipped_steps: int, last_finite, bucket_edges) -> None:
    """``STATE_FILE`` of checkpoint ``folder``: the controller's ``state_dict`` (tensors and plain containers,
    recipe/atesd/method/controller/core.py) and the driver's counters, all loadable by :func:`load_atesd_state`."""
    state = {
        "controller": controller,
        "skipped_steps": skipped_steps,
        "last_finite": last_finite,
        "bucket_edges": list(bucket_edges),
    }
    torch.save(state, os.path.join(folder, STATE_FILE))


def load_atesd_state(folder: str) -> dict:
    """:func:`save_atesd_state`'s state, read with ``torch.load(weights_only=True)``: a file holding any other
    pickled object (which could run code while it is unpickled) is refused, naming the file. verl's own files of
    the step are loaded by verl with pickle (docs/launching.md, "Trust boundary")."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"resuming from {folder}: no {STATE_FILE} (not an ATESD checkpoint?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused: it holds pickled Python objects besides tensors and plain containers, and "
            "unpickling them could run arbitrary code (torch.load(weights_only=True) refused it, see the cause). "
            "This recipe never writes such a file: it is untrusted or was altered; resume only checkpoints you "
            'trust (docs/launching.md, "Trust boundary")'
        ) from err


def record_donors(root: str, train_files, probe_path, seed: int) -> dict:
    """``DONORS_FILE`` in the checkpoint root: which donor each row of ``other_reference`` is shown
    (recipe/atesd/data/donor_rows.py). A resumed run recomputes the pairing and must find the recorded one
    (else the training data, the probe or ``teacher_prompt.donor_seed`` changed: ValueError naming the file)."""
    pairing = {target: d["donor_id"] for target, d in donor_rows(train_files, probe_path, seed).items()}
    path = os.path.join(root, DONORS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        if recorded != {"donor_seed": seed, "pairing": pairing}:
            raise ValueError(
                f"{path}: this run's donor pairing differs from the recorded one (data.train_files, probe.path or "
                "teacher_prompt.donor_seed changed since the run started)"
            )
        return pairing
    os.makedirs(root, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"donor_seed": seed, "pairing": pairing}, f, indent=0, sort_keys=True)
    return pairing


def exposure_table(decision, edges) -> ExposureTable:
    """What the workers build teacher prompts with: the window's α per bucket over the run's edges
    (one bucket, no edges under ``granularity: batch``: the window's one α for every row)."""
    return ExposureTable(decision.window_id, tuple(decision.bucket_alphas), tuple(edges))


def _check_workers(used, expected: ExposureTable) -> None:
    """The one consistency check: every rank built its teacher prompts with the controller's table."""
    bad = [(rank, got) for rank, got in enumerate(used) if got != expected]
    if bad:
        raise RuntimeError(
            f"distillation update: workers disagree with the controller's exposure {expected}: {bad}"
        )


def bucket_batch_metrics(buckets, scores, num_buckets: int) -> dict:
    """occupancy_k = n_k / N (the step's rows in bucket k); accuracy_k = mean task reward of bucket k's rows
    (the accuracy under a 0/1 reward), absent when n_k = 0."""
    if len(buckets) != len(scores):
        raise ValueError(f"bucket_batch_metrics: {len(buckets)} buckets for {len(scores)} scores")
    counts = bucket_occupancy(buckets, num_buckets)
    out = {f"exposure/occupancy_bucket_{k}": n / max(len(buckets), 1) for k, n in enumerate(counts)}
    for k, n in enumerate(counts):
        if n:
            out[f"exposure/accuracy_bucket_{k}"] = (
                sum(s for s, b in zip(scores, buckets, strict=True) if b == k) / n
            )
    return out


def _summarise(reports, grad_norm: float) -> dict:
    """Reduce per-rank ``UpdateReport``s to the documented ``distill/*`` and timing metrics."""
    n = sum(r.n_tokens for r in reports)
    token_kl = np.concatenate([np.asarray(r.token_kl, dtype=np.float64) for r in reports])
    loss = sum(r.loss_sum for r in reports) / max(n, 1)
    nonfinite = sum(r.nonfinite_microbatches for r in reports)
    skipped = nonfinite > 0 or not math.isfinite(grad_norm) or not math.isfinite(loss)
    return {
        "distill/loss": loss,
        "distill/kl_mean": float(token_kl.mean()) if token_kl.size else 0.0,
        "distill/kl_p99": float(np.percentile(token_kl, 99)) if token_kl.size else 0.0,
        "distill/top1_disagreement": 1.0 - sum(r.agree_sum for r in reports) / max(n, 1),
        "distill/student_entropy": sum(r.entropy_sum for r in reports) / max(n, 1),
        "distill/response_tokens": float(n),
        "distill/token_weight_mean": sum(r.weight_sum for r in reports) / max(n, 1),
        "distill/target_kl_mean": sum(r.target_kl_sum for r in reports) / max(n, 1),
        "distill/teacher_truncated": float(sum(r.n_truncated for r in reports)),
        "distill/teacher_cut_segments": float(sum(r.n_cut_segments for r in reports)),
        "distill/skipped": float(skipped),
        "timing_s/teacher": max(r.teacher_seconds for r in reports),
        "timing_s/distill_loss": max(r.loss_seconds for r in reports),
        **_bucket_kl(reports),
    }


def _bucket_kl(reports) -> dict:
    """``distill/kl_mean_bucket_k``: token mean of the forward KL over bucket k's response tokens, all ranks
    (per_difficulty only; absent for a bucket with no tokens this update)."""
    sizes = {len(r.bucket_tokens) for r in reports if r.bucket_tokens}
    if not sizes:
        return {}
    k_count = max(sizes)
    kl, n = [0.0] * k_count, [0] * k_count
    for r in reports:
        for k in range(len(r.bucket_tokens)):
            kl[k] += r.bucket_kl_sum[k]
            n[k] += r.bucket_tokens[k]
    return {f"distill/kl_mean_bucket_{k}": kl[k] / n[k] for k in range(k_count) if n[k]}
