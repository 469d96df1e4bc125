"""verl glue: verl 0.9.1's V1 synchronous trainer with the run's metrics history kept whole on resume.

Both entry points train through a subclass of :class:`HistorySyncTrainer`: ``recipe.atesd.main_grpo`` (verl's
GRPO) selects it as ``trainer.v1.trainer_mode=sync_history`` (recipe/atesd/config/grpo_trainer.yaml),
``recipe.atesd.main_atesd`` through its subclass ``ATESDTrainer`` (``atesd``, recipe/atesd/glue/trainer.py).
What it adds to verl's ``PPOTrainerSync`` is one hook: after ``_setup()`` has loaded the checkpoint (so
``global_steps`` is the resume step), :func:`recipe.atesd.glue.file_logger.use_resumable_file_logger` makes the
``file`` logger append to the history instead of truncating it, with an attempt record naming the model the
run started from (``model.json``, written before training by :func:`record_start_model`, which both entry
points call: recipe/atesd/data/manifest.py).

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


@register_trainer("sync_history")
class HistorySyncTrainer(PPOTrainerSync):
    mode_name = "sync_history"  # the trainer.v1.trainer_mode that selects the class

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

    def _open_history(self) -> None:
        """fit() opens the metrics history through the resumable logger; its attempt record names the model."""
        model = read_run_model(self.config.trainer.default_local_dir)
        use_resumable_file_logger(resume_step=self.global_steps, model=model)
