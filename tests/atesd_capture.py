"""Test-only hook: what the worker's loss saw on the first update, saved for the loss-parity e2e test.

Loaded into every process of a test stack the way ``verl_patches`` are: the test sets
``VERL_USE_EXTERNAL_MODULES=atesd_capture`` (``verl/__init__.py`` imports it) and puts ``tests/`` on
``PYTHONPATH``. When ``recipe.atesd.glue.worker`` is imported, the worker's ``_token_losses`` and the
module's ``distill_token_losses`` / ``fused_distill_loss`` are wrapped; every micro-batch of the first
update (the first ``UpdateReport`` this process sees) is written to ``$ATESD_CAPTURE_DIR/rank<r>_mb<i>.pt``:
both sides' response-row logits (with ``distill.fused``: each chunk's, as the kernel got them), the per-token
loss, the response mask, the reduction constants and the (α, window) the worker used (α per bucket
under ``per_difficulty``). The production
worker carries no hook.

With ``$ATESD_KILL_AFTER_CHECKPOINT=<s>`` it also SIGKILLs the trainer's process right after step ``s``'s
checkpoint is complete (verl's tracker names it) and before verl logs step ``s``'s metrics — the kill the
metrics history must survive (``lost_steps``, recipe/atesd/tools/run_history.py) at a known point, not a race
with a poll of the tracker.
"""

import functools
import os
import signal

from verl_patches.import_hook import when_imported

CAPTURE_DIR_VAR = "ATESD_CAPTURE_DIR"
KILL_VAR = "ATESD_KILL_AFTER_CHECKPOINT"


def _patch(module) -> None:
    import torch

    calls: dict = {}
    state = {"report": None, "count": 0}
    distill_token_losses = module.distill_token_losses
    fused_distill_loss = module.fused_distill_loss
    token_losses = module.ATESDWorker._token_losses

    @functools.wraps(distill_token_losses)
    def recorded(student, teacher, cfg, target_ids=None):
        loss, diag = distill_token_losses(student, teacher, cfg, target_ids=target_ids)
        calls.update(student=student, teacher=teacher, cfg=cfg, loss=loss)
        return loss, diag

    @functools.wraps(fused_distill_loss)
    def recorded_fused(h_s, w_s, h_t, w_t, cfg, weights=None, target_ids=None):
        """distill.fused: the [C, V] logits of every chunk exactly as the kernel got them (in the model's
        dtype, e.g. bf16 products), placed at their rows; rows never projected (weight 0) stay 0."""
        from recipe.atesd.method import fused_loss

        chunks, real_for = [], fused_loss.chunk_forward_for

        def recording_for(c, device):
            forward = real_for(c, device)

            def chunk(student, teacher, *rest):
                chunks.append((student.detach().float(), teacher.detach().float()))
                return forward(student, teacher, *rest)

            return chunk

        fused_loss.chunk_forward_for = recording_for
        try:
            loss, diag = fused_distill_loss(h_s, w_s, h_t, w_t, cfg, weights=weights, target_ids=target_ids)
        finally:
            fused_loss.chunk_forward_for = real_for
        n, vocab = h_s.shape[0], w_s.shape[0]
        rows = torch.arange(n) if weights is None else torch.nonzero(weights.reshape(-1).cpu()).squeeze(1)
        student, teacher = torch.zeros(n, vocab), torch.zeros(n, vocab)
        if chunks:
            student[rows] = torch.cat([s for s, _ in chunks]).cpu()
            teacher[rows] = torch.cat([t for _, t in chunks]).cpu()
        calls.update(student=student, teacher=teacher, cfg=cfg, loss=loss)
        return loss, diag

    @functools.wraps(token_losses)
    def capturing(self, logits, data):
        out = token_losses(self, logits, data)
        if state["report"] is None:
            state["report"] = self._report  # the first update's report object
        if self._report is state["report"]:
            folder = os.environ[CAPTURE_DIR_VAR]
            os.makedirs(folder, exist_ok=True)
            table = self._exposure  # the window's ExposureTable; one bucket: its one α
            alpha = table.bucket_alphas[0] if len(table.bucket_alphas) == 1 else table.bucket_alphas
            window_id = table.window_id
            torch.save(
                {
                    "student_logits": calls["student"].detach().float().cpu(),
                    "teacher_logits": calls["teacher"].detach().float().cpu(),
                    "token_loss": calls["loss"].detach().float().cpu(),
                    "response_mask": data["response_mask"].values().cpu(),
                    "batch_num_tokens": float(data["batch_num_tokens"]),
                    "dp_size": int(data["dp_size"]),
                    "alpha": alpha,
                    "window_id": window_id,
                    "distill": calls["cfg"],
                },
                os.path.join(folder, f"rank{torch.distributed.get_rank()}_mb{state['count']}.pt"),
            )
            state["count"] += 1
        return out

    module.distill_token_losses = recorded
    module.fused_distill_loss = recorded_fused
    module.ATESDWorker._token_losses = capturing


def _kill_after_checkpoint(module) -> None:
    step = int(os.environ[KILL_VAR])
    save = module.ATESDTrainer._save_checkpoint

    @functools.wraps(save)
    def save_then_die(self):
        save(
            self
        )  # the controller state, verl's shards and (last) verl's tracker: the checkpoint is complete
        if self.global_steps == step:
            os.kill(os.getpid(), signal.SIGKILL)  # fit() logs the step's metrics only after this returns

    module.ATESDTrainer._save_checkpoint = save_then_die


if os.environ.get(CAPTURE_DIR_VAR):
    when_imported("recipe.atesd.glue.worker", _patch)
if os.environ.get(KILL_VAR):
    when_imported("recipe.atesd.glue.trainer", _kill_after_checkpoint)
