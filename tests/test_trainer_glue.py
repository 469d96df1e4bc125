"""Small pieces of the verl glue checked without a stack (the e2e tests run the whole trainer)."""

import inspect
import os
import re
import shlex

import pytest
import torch
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


class RunsCode:
    """A pickle payload: unpickling it runs ``touch <marker>`` (what a crafted checkpoint could run instead)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_pickle_payload_in_the_atesd_state_is_refused(tmp_path):
    """A resume reads atesd_state.pt with ``torch.load(weights_only=True)`` (``load_atesd_state``): a file
    whose unpickling runs code is refused with an error naming it, and the code never runs. Control: loading
    the same file with pickle (``weights_only=False``, what the trainer did before) runs it."""
    from recipe.atesd.glue.trainer import STATE_FILE, load_atesd_state

    marker = tmp_path / "marker"
    folder = tmp_path / "global_step_3"
    folder.mkdir()
    state = {
        "controller": RunsCode(marker),
        "skipped_steps": 0,
        "last_finite": (0.0, 0.0, 0.0),
        "bucket_edges": [],
    }
    torch.save(state, folder / STATE_FILE)
    message = (
        rf"{re.escape(str(folder / STATE_FILE))}: refused: .*pickled .*arbitrary code.*checkpoints you trust"
    )
    with pytest.raises(ValueError, match=message):
        load_atesd_state(str(folder))
    assert not marker.exists()

    torch.load(folder / STATE_FILE, weights_only=False)
    assert marker.exists()
