"""Append-only ``generations.jsonl`` with resume (one JSON row per (benchmark, id, sample_index))."""

import json
import os
from pathlib import Path

RowKey = tuple[str, str, int]


def row_key(row: dict) -> RowKey:
    return (row["benchmark"], row["id"], int(row["sample_index"]))


class GenerationStore:
    """Rows already in the file are kept; a truncated last line (a kill mid-write) is cut off on open.

    :meth:`append` writes a batch of rows, flushes and ``fsync``s, so a finished batch survives a kill.
    A malformed line other than the last is a ValueError naming its line number.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self.keys: set[RowKey] = set()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        *complete, partial = data.split(b"\n")  # every row ends in "\n": what follows the last one is partial
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                key = row_key(row)
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{self.path}:{number}: malformed row ({err})") from err
            if key in self.keys:
                raise ValueError(f"{self.path}:{number}: duplicate row {key}")
            self.keys.add(key)
            self.rows.append(row)
        if partial:
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(partial))

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                key = row_key(row)
                if key in self.keys:
                    raise ValueError(f"row {key} is already in {self.path}")
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.keys.add(key)
                self.rows.append(row)
            f.flush()
            os.fsync(f.fileno())


def check_run_config(path: Path, recorded: dict) -> None:
    """First run: write ``recorded`` to ``path``. Resume: each key must be unchanged (ValueError naming it),
    since rows generated under other settings must not be mixed."""
    path = Path(path)
    if not path.exists():
        path.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return
    previous = json.loads(path.read_text())
    for key in sorted(set(previous) | set(recorded)):
        if previous.get(key) != recorded.get(key):
            raise ValueError(
                f"{path}: '{key}' was {previous.get(key)!r}, now {recorded.get(key)!r}; "
                "use a new output_dir or the original settings"
            )
