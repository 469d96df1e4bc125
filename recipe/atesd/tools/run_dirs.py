"""A run's folder, one layout for every driver: a sweep arm (recipe/atesd/glue/sweep.py), a run of the study
driver (recipe/atesd/tools/repro_sweep.py), and their readers (repro_rows.py, repro_archive.py). Pure python.

``<run>/``: ``run.json`` (the driver's: what was asked), ``config.yaml`` and ``record.json`` (a sweep arm's resolved
config and provenance), ``metrics.jsonl`` (the metrics history), ``checkpoints/``, ``val_generations/<step>.jsonl``
and ``done.json`` (written last, atomically: the run finished; its wall time).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

RUN, DONE, METRICS, LOG = "run.json", "done.json", "metrics.jsonl", "train.log"
CONFIG, RECORD = "config.yaml", "record.json"
CHECKPOINTS, GENERATIONS = "checkpoints", "val_generations"
# beside the runs in a sweep's root, not runs: each stack's log and record (recipe/atesd/tools/repro_sweep.py) and
# the actor's state every arm starts from (recipe/atesd/glue/sweep.py::initial_state_dir)
STACKS, INITIAL_STATE = "stacks", "initial_state"


def write_json(path: Path, data: dict) -> None:
    """Atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def move_aside(directory: Path, now: datetime | None = None) -> Path:
    """Rename an incomplete run's ``directory`` to ``<name>.incomplete-<UTC time>`` beside it (kept, listed by the
    report, never read as a result); return the new path."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    aside = directory.with_name(f"{directory.name}.incomplete-{stamp}")
    os.replace(directory, aside)
    return aside
