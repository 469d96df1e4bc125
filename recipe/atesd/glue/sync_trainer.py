"""verl glue: verl 0.9.1's V1 synchronous trainer with the run's metrics history kept whole on resume.

Both entry points train through a subclass of :class:`HistorySyncTrainer`: ``recipe.atesd.main_grpo`` (verl's
GRPO) selects it as ``trainer.v1.trainer_mode=sync_history`` (recipe/atesd/config/grpo_trainer.yaml),
``recipe.atesd.main_atesd`` through its subclass ``ATESDTrainer`` (``atesd``, recipe/atesd/glue/trainer.py).
What it adds to verl's ``PPOTrainerSync``:

- the metrics history: after ``_setup()`` has loaded the checkpoint (so ``global_steps`` is the resume step),
  :func:`recipe.atesd.glue.file_logger.use_resumable_file_logger` makes the ``file`` logger append to the history
  instead of truncating it, with an attempt record naming the model the run started from (``model.json``,
  written before training by :func:`record_start_model`, which both entry points call:
  recipe/atesd/data/manifest.py);
- a reproducible update: verl's replay buffer hands the step's rows over in the order their rollouts finished
  (``ReplayBuffer._materialize_batch`` walks the TransferQueue partition in insertion order), which changes from
  run to run; the update's sums then change in their last bits and, through the next step's sampling, the whole
  run. ``_balance_batch`` first puts the rows in the order the dataloader gave the prompts
  (:func:`canonical_order`), then verl balances them as before (docs/cpu.md, "Paired rollouts").

verl's base class branches on ``trainer_mode == "sync"`` (replay buffer, batch refill, TransferQueue
checkpoints, in-flight re-issue on resume); these trainers are synchronous and colocated like
``PPOTrainerSync``, so they answer ``"sync"`` while verl's registry selects them under their own name.
"""

from __future__ import annotations

from pathlib import Path

from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from recipe.atesd.data.manifest import read_run_model, record_run_model
from recipe.atesd.glue.file_logger import use_resumable_file_logger
from recipe.atesd.tools.summarize import TRACKER


def record_start_model(config) -> dict:
    """The entry points' call before training: the model record of ``actor_rollout_ref.model.path`` into the
    checkpoint root (``model.json``), checked against the run's own when the start resumes a checkpoint
    (``resume_path``, or ``auto`` with verl's tracker present); recipe/atesd/data/manifest.py."""
    trainer = config.trainer
    resuming = trainer.resume_mode == "resume_path" or (
        trainer.resume_mode != "disable" and (Path(trainer.default_local_dir) / TRACKER).exists()
    )
    return record_run_model(config.actor_rollout_ref.model.path, trainer.default_local_dir, resuming)


def canonical_order(keys: list[str], prompt_position: dict[str, int]) -> list[int]:
    """The permutation that sorts a batch's rows by (prompt's position in the dataloader's batch, sample number,
    output number). verl names a row ``{uid}_{session_id}_{i}`` (``agent_loop_tq.py``); a uid not in
    ``prompt_position`` is a KeyError naming the row."""

    def rank(j: int) -> tuple[int, int, int]:
        uid, session, output = keys[j].rsplit("_", 2)
        if uid not in prompt_position:
            raise KeyError(f"batch row {keys[j]!r}: its prompt uid was not submitted by this trainer")
        return prompt_position[uid], int(session), int(output)

    return sorted(range(len(keys)), key=rank)


@register_trainer("sync_history")
class HistorySyncTrainer(PPOTrainerSync):
    mode_name = "sync_history"  # the trainer.v1.trainer_mode that selects the class

    def __init__(self, config):
        super().__init__(config)
        self._prompt_position: dict[str, int] = {}  # uid → its draw number, until its rows are trained on
        self._prompts_drawn = 0

    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, configured: str) -> None:
        if configured != self.mode_name:
            raise ValueError(
                f"trainer.v1.trainer_mode must be {self.mode_name!r} for {type(self).__name__}, got {configured!r}"
            )

    def init(self):
        self._setup()  # loads the checkpoint: global_steps is the resume step from here on
        self._open_history()
        self.on_init_end()

    def _next_train_batch(self, num_prompts: int | None = None):
        """verl's, remembering each prompt's position (:func:`canonical_order`)."""
        batch = super()._next_train_batch(num_prompts)
        for uid in batch["uid"]:
            self._prompt_position[uid] = self._prompts_drawn
            self._prompts_drawn += 1
        return batch

    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        """The rows in :func:`canonical_order`, then verl's balancing (module docstring)."""
        batch.reorder(canonical_order(batch.keys, self._prompt_position))
        for key in batch.keys:
            self._prompt_position.pop(key.rsplit("_", 2)[0], None)
        return super()._balance_batch(batch, metrics, logging_prefix, keep_minibatch)

    def _open_history(self, path: str | None = None) -> None:
        """fit() opens the metrics history (at ``path``, else verl's place) through the resumable logger; its
        attempt record names the model."""
        model = read_run_model(self.config.trainer.default_local_dir)
        use_resumable_file_logger(resume_step=self.global_steps, model=model, path=path)
