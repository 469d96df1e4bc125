"""A run's metrics history across attempts: append on resume, each step once, boundaries recorded.

The end-to-end check (a real kill and resume writing one history) is in tests/test_atesd_cpu_e2e.py.
"""

import json
from datetime import UTC, datetime

import pytest
from omegaconf import OmegaConf

from recipe.atesd.main_atesd import completed_step
from recipe.atesd.tools.run_history import open_history, read_history
from recipe.atesd.tools.summarize import read_metrics, summary

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def train_row(step, alpha=0.5, window=0):
    return {
        "step": step,
        "data": {"exposure/alpha": alpha, "exposure/window": window, "distill/loss": 1.0 / step},
    }


def log(handle, record):
    handle.write((json.dumps(record) + "\n").encode())


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_fresh_history_starts_with_a_boundary_and_appends(tmp_path):
    path = tmp_path / "sub" / "m.jsonl"
    model = {"path": "/m", "sha256": "a" * 64, "source": "manifest"}
    handle, attempt = open_history(path, 0, now=T0, model=model)
    log(handle, train_row(1))
    handle.close()
    first, second = lines(path)
    assert first == {
        "step": 0,
        "data": {},
        "attempt": {
            "number": 1,
            "resumed_from_step": 0,
            "dropped_steps": [],
            "started": "20260102T030405Z",
            "model": model,
            "lost_steps": [],
        },
    }
    assert second == train_row(1) and attempt.number == 1
    assert read_history(path).attempts[0].model == model


def test_resume_keeps_history_replaces_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "m.jsonl"
    handle, _ = open_history(path, 0, now=T0)
    for step in range(1, 7):  # killed after step 6; its last checkpoint is step 5
        log(handle, train_row(step, alpha=0.1 * step))
    handle.close()

    handle, attempt = open_history(path, 5)
    assert (attempt.number, attempt.resumed_from_step, attempt.dropped_steps) == (2, 5, [6])
    for step in (6, 7, 8):
        log(handle, train_row(step, alpha=0.9))
    handle.close()

    history = read_history(path)
    steps = [r["step"] for r in history.records]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # every step once, in order
    assert [r["data"]["exposure/alpha"] for r in history.records][4:6] == [
        0.5,
        0.9,
    ]  # step 5 kept, 6 replaced
    assert [(a.number, a.resumed_from_step) for a in history.attempts] == [(1, 0), (2, 5)]
    boundary = lines(path)[6]
    assert boundary["step"] == 5 and boundary["data"] == {} and boundary["attempt"]["dropped_steps"] == [6]

    handle, attempt = open_history(path, 8)  # a third attempt, nothing to replace
    handle.close()
    assert (attempt.number, attempt.dropped_steps) == (3, [])


def test_a_verl_history_without_boundaries_reads_as_one_attempt_and_resumes(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(train_row(s)) + "\n" for s in (1, 2, 3)))
    assert [a.number for a in read_history(path).attempts] == [1]
    handle, attempt = open_history(path, 2)
    handle.close()
    assert attempt.number == 2 and attempt.dropped_steps == [3]
    assert [r["step"] for r in read_history(path).records] == [1, 2]


def test_fresh_start_moves_an_old_history_aside(tmp_path, capsys):
    path = tmp_path / "m.jsonl"
    old = "".join(json.dumps(train_row(s)) + "\n" for s in (1, 2))
    path.write_text(old)
    handle, _ = open_history(path, 0, now=T0)
    handle.close()
    aside = tmp_path / "m.20260102T030405Z.jsonl"
    assert aside.read_text() == old
    assert read_history(path).records == []
    assert str(aside) in capsys.readouterr().out


def test_bad_history_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(train_row(1)) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not JSON"):
        open_history(path, 1)
    path.write_text(json.dumps(train_row(1)) + '\n{"data": {}}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not a metrics record"):
        read_history(path)


def test_verl_tracking_file_backend_appends_after_the_swap(tmp_path, monkeypatch):
    """verl's own ``Tracking`` (what ``fit()`` builds) writes through the swapped class."""
    from verl.utils import tracking

    from recipe.atesd.glue.file_logger import VERL_FILE_LOGGER, use_resumable_file_logger

    path = tmp_path / "m.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    monkeypatch.setattr(tracking, "FileLogger", VERL_FILE_LOGGER)  # undone after the test
    first = tracking.Tracking("p", "e", default_backend=["file"])
    for step in (1, 2, 3):
        first.log({"exposure/alpha": 0.25, "exposure/window": 0}, step)
    first.finish()
    assert [r["step"] for r in read_history(path).records] == [1, 2, 3]  # plain verl

    use_resumable_file_logger(resume_step=2)
    resumed = tracking.Tracking("p", "e", default_backend=["file"])
    for step in (3, 4):
        resumed.log({"exposure/alpha": 0.75, "exposure/window": 1}, step)
    resumed.finish()
    history = read_history(path)
    assert [(r["step"], r["data"]["exposure/alpha"]) for r in history.records] == [
        (1, 0.25),
        (2, 0.25),
        (3, 0.75),
        (4, 0.75),
    ]
    assert history.attempts[-1].dropped_steps == [3]


def test_a_step_checkpointed_but_never_logged_is_recorded_as_lost(tmp_path, capsys):
    """verl saves step s's checkpoint before it logs step s: a kill between the two resumes from s with no
    record of s. The resumed attempt names it (lost_steps), says so, and the summary shows it; a step that
    was logged is never called lost."""
    path = tmp_path / "m.jsonl"
    handle, _ = open_history(path, 0, now=T0)
    for step in (1, 2, 3):  # step 4's checkpoint was saved, then the process died before logging it
        log(handle, train_row(step))
    handle.close()
    handle, attempt = open_history(path, 4, now=T0)
    handle.close()
    assert (attempt.resumed_from_step, attempt.dropped_steps, attempt.lost_steps) == (4, [], [4])
    assert "steps [4] were checkpointed but never logged" in capsys.readouterr().out
    rows, attempts = read_metrics(path)
    assert attempts[-1].lost_steps == [4]
    assert "resumed from step 4 at 20260102T030405Z; LOST steps [4] (checkpointed, never logged" in summary(
        rows, None, attempts
    )
    # the ordinary case: everything up to the checkpoint logged, nothing lost
    handle, attempt = open_history(path, 3, now=T0)
    handle.close()
    assert attempt.lost_steps == []
    # a resume whose history file is new (another VERL_FILE_LOGGER_PATH): every earlier step is missing here
    handle, attempt = open_history(tmp_path / "new.jsonl", 2, now=T0)
    handle.close()
    assert attempt.lost_steps == [1, 2]


def test_summary_reports_attempts_and_refuses_repeated_steps(tmp_path):
    path = tmp_path / "m.jsonl"
    handle, _ = open_history(path, 0, now=T0)
    for step in (1, 2, 3):
        log(handle, train_row(step, window=(step - 1) // 2))
    handle.close()
    model = {"path": "/models/toy", "sha256": "c" * 64, "source": "manifest"}
    handle, _ = open_history(path, 2, now=T0, model=model)
    log(handle, train_row(3, window=1))
    handle.close()
    rows, attempts = read_metrics(path)
    text = summary(rows, None, attempts)
    assert "history: 2 attempt(s)" in text
    assert "attempt 2: resumed from step 2 at 20260102T030405Z; re-ran steps [3]" in text
    # the model of each attempt: none recorded by the first, a hash and path by the second
    assert "  attempt 1: fresh start at 20260102T030405Z; model not recorded\n" in text
    assert f"re-ran steps [3] left by the interrupted attempt; model {'c' * 64} (/models/toy)" in text
    assert "window   1  α=0.500  steps 3–3" in text

    path.write_text("".join(json.dumps(train_row(s)) + "\n" for s in (1, 2, 2)))
    with pytest.raises(ValueError, match=r"steps \[2\] appear more than once"):
        read_metrics(path)


def test_completed_run_is_detected_from_the_checkpoint_tracker(tmp_path):
    def cfg(**trainer):
        base = {"resume_mode": "auto", "total_training_steps": 9, "default_local_dir": str(tmp_path)}
        return OmegaConf.create({"trainer": {**base, **trainer}})

    assert completed_step(cfg()) is None  # no checkpoint yet
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("5")
    assert completed_step(cfg()) is None  # steps 6–9 still to train
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("9")
    assert completed_step(cfg()) == 9
    assert completed_step(cfg(total_training_steps=12)) is None
    assert completed_step(cfg(resume_mode="disable")) is None
    assert completed_step(cfg(val_only=True)) is None
