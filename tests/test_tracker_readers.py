"""tests/tracker_readers.py against the loggers verl drives: a W&B offline run and a TensorBoard writer,
written here the way verl's ``Tracking`` logs (``wandb.log(data, step=s)``, ``add_scalar(key, value, s)``),
read back value for value — including a row large enough to span W&B's 32 KiB blocks."""

import json
import math
import os
import subprocess
import sys

import pytest
from tracker_readers import WANDB_HEADER, tensorboard_scalars, wandb_history, wandb_records

ROWS = {
    s: {"exposure/alpha": 0.1 * s, "distill/loss": 1.0 / s, "controller/reward": math.nan} for s in (1, 2, 3)
}
WIDE = {f"probe/key_{i:05d}": i / 7 for i in range(3000)}  # one record of ~100 KiB: pieces across blocks

WRITER = """
import json, sys, wandb
rows, wide = json.loads(sys.argv[1]), json.loads(sys.argv[2])
wandb.init(project="p", name="e")
for step, data in rows.items():
    wandb.log(data, step=int(step))
wandb.log(wide, step=4)
wandb.finish()
"""


def test_wandb_offline_run_reads_back(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    subprocess.run(
        [sys.executable, "-c", WRITER, json.dumps(ROWS), json.dumps(WIDE)],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert run_file.read_bytes().startswith(WANDB_HEADER) and run_file.stat().st_size > 32768
    history = wandb_history(run_file)
    for step, data in ROWS.items():
        assert history[step]["exposure/alpha"] == data["exposure/alpha"]
        assert history[step]["distill/loss"] == data["distill/loss"]
        assert math.isnan(history[step]["controller/reward"])
    assert {k: history[4][k] for k in WIDE} == WIDE
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(b"not a log")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        wandb_records(bad)


def test_tensorboard_scalars_read_back(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, data in ROWS.items():
        for key, value in data.items():
            writer.add_scalar(key, value, step)
    writer.close()
    scalars = tensorboard_scalars(tmp_path)
    assert set(scalars) == set(ROWS[1])
    for step, data in ROWS.items():
        assert scalars["distill/loss"][step] == pytest.approx(data["distill/loss"], rel=1e-6)  # float32
        assert math.isnan(scalars["controller/reward"][step])
