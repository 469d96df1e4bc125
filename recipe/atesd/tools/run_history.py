"""A run's metrics history, kept whole across attempts (crash, kill, resume). Pure python.

verl writes one JSON record per ``logger.log`` call, ``{"step": s, "data": {...}}``, to the file logger's
JSONL. Each start of a run (an *attempt*) opens that history with :func:`open_history`:

- a resumed attempt (from checkpoint step ``s0 > 0``) keeps every record with ``step <= s0`` and drops
  the records of steps ``> s0`` that the interrupted attempt left behind (they are re-run and logged
  again), so every step is in the history once;
- a fresh attempt (``s0 = 0``) on a non-empty file moves that file aside to
  ``<stem>.<UTC time>.jsonl`` (printed) instead of truncating it;
- either way it appends one boundary record and returns a handle that appends:

      {"step": s0, "data": {}, "attempt": {"number": k, "resumed_from_step": s0,
                                           "dropped_steps": [...], "lost_steps": [...],
                                           "started": "<UTC ISO time>",
                                           "model": {"path", "sha256", "source"} | null}}

``lost_steps`` are the training steps up to the checkpoint that the history holds no record of: verl saves a
step's checkpoint *before* it logs the step's metrics, so a kill between the two resumes after a step whose
metrics are gone for good (or the history file is not the one the checkpoints were made with). They are named
here, printed, and shown by ``recipe/atesd/tools/summarize.py`` and the run report, never silently absent.

``model`` is the model the run started from (``recipe/atesd/data/manifest.py::model_record``; null in
histories written before issue 26).

Readers that only look at ``data`` (verl's format) see an empty record; :func:`read_history` returns
the metric rows and the attempts separately. The rewrite is atomic (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Attempt:
    """One start of a run, as recorded in its boundary record."""

    number: int
    resumed_from_step: int
    dropped_steps: list[int] = field(default_factory=list)
    started: str = ""
    model: dict | None = None
    lost_steps: list[int] = field(default_factory=list)


@dataclass
class History:
    """Metric records ``{"step": s, "data": {...}}`` in file order, and the attempts that wrote them."""

    records: list[dict]
    attempts: list[Attempt]


def _parse(path: Path) -> list[dict]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON ({err})") from err
        if not isinstance(record, dict) or "step" not in record or not isinstance(record.get("data"), dict):
            raise ValueError(f"{path}:{n}: not a metrics record (need 'step' and a 'data' object)")
        records.append(record)
    return records


def read_history(path: str | Path) -> History:
    """Split a metrics JSONL into metric records and attempt boundaries (a history written by plain verl,
    without boundaries, reads as one attempt)."""
    records = _parse(Path(path))
    attempts = [Attempt(**r["attempt"]) for r in records if "attempt" in r]
    return History([r for r in records if "attempt" not in r], attempts or [Attempt(1, 0)])


def open_history(path: str | Path, resume_step: int, now: datetime | None = None, model: dict | None = None):
    """Prepare ``path`` for the attempt that starts at checkpoint step ``resume_step`` (0: fresh) and
    return ``(handle, attempt)``: a binary append handle positioned after the new boundary record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    kept, dropped, number = [], [], 1
    lost = list(range(1, resume_step + 1))  # until a record of the step is found
    if path.exists() and path.stat().st_size > 0:
        records = _parse(path)
        if resume_step > 0:
            kept = [r for r in records if r["step"] <= resume_step]
            dropped = sorted({r["step"] for r in records if r["step"] > resume_step and "attempt" not in r})
            number = max([r["attempt"]["number"] for r in records if "attempt" in r] or [1]) + 1
            logged = {r["step"] for r in kept if "attempt" not in r and r["data"]}
            lost = [s for s in lost if s not in logged]
        else:
            aside = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
            os.replace(path, aside)
            print(f"[atesd] fresh run: the previous metrics history {path} was moved to {aside}")
    attempt = Attempt(number, resume_step, dropped, stamp, model, lost)
    boundary = {"step": resume_step, "data": {}, "attempt": attempt.__dict__}
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in [*kept, boundary]:
            handle.write(json.dumps(record) + "\n")
    os.replace(tmp, path)
    if dropped:
        print(
            f"[atesd] resuming from step {resume_step}: replaced steps {dropped} left by the interrupted attempt"
        )
    if lost:
        print(
            f"[atesd] resuming from step {resume_step}: steps {lost} were checkpointed but never logged in {path}; "
            "their metrics are lost (recorded as lost_steps)"
        )
    return path.open("ab", buffering=0), attempt
