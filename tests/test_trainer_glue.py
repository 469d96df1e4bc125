"""Small pieces of the verl glue checked without a stack (the e2e tests run the whole trainer)."""

import inspect

from omegaconf import OmegaConf


def test_replay_buffer_polls_at_the_configured_interval(monkeypatch):
    """verl 0.9.1 polls finished rollouts every 2.0 s (the ~2 s quanta of timing_s/gen); ours is a key."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from recipe.atesd.glue.trainer import ATESDTrainer

    assert inspect.signature(ReplayBuffer.__init__).parameters["poll_interval"].default == 2.0
    assert "time.sleep(self.poll_interval)" in inspect.getsource(ReplayBuffer._wait_for_next_poll)

    class Buffer:
        poll_interval = 2.0

    monkeypatch.setattr(PPOTrainerSync, "_build_replay_buffer", lambda self: Buffer())
    trainer = ATESDTrainer.__new__(ATESDTrainer)
    trainer.config = OmegaConf.load("recipe/atesd/config/atesd_trainer.yaml")
    assert trainer._build_replay_buffer().poll_interval == 0.05
