"""verl RL parquet schema for ATESD rows, and record readers shared by prepare_train / prepare_eval.

Row layout (the cross-module contract): data_source, prompt (student chat messages), ability="math",
reward_model {style="rule", ground_truth=final answer}, extra_info {index, id, problem, reference_solution,
answer, split}.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recipe.atesd.method.prompts import TeacherPromptConfig, build_student_messages

PARQUET_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),
                    ("id", pa.string()),
                    ("problem", pa.string()),
                    ("reference_solution", pa.string()),
                    ("answer", pa.string()),
                    ("split", pa.string()),
                ]
            ),
        ),
    ]
)

_FILE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Record:
    """One input row: ``data`` is the parsed object, or None with ``error`` set when it could not be parsed."""

    position: int
    data: dict | None
    error: str | None = None


def make_row(
    *,
    data_source: str,
    problem: str,
    reference_solution: str,
    answer: str,
    row_id: str,
    index: int,
    split: str,
    cfg: TeacherPromptConfig,
) -> dict:
    """One parquet row; the prompt is the student context from ``prompts.build_student_messages``."""
    return {
        "data_source": data_source,
        "prompt": build_student_messages(problem, cfg),
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {
            "index": index,
            "id": row_id,
            "problem": problem,
            "reference_solution": reference_solution,
            "answer": answer,
            "split": split,
        },
    }


def write_parquet(rows: list[dict], path: Path, schema: pa.Schema = PARQUET_SCHEMA) -> None:
    """Write rows with the exact ``schema`` (default ``PARQUET_SCHEMA``; an empty list gives an empty, typed file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def load_prompt_config(path: str | None) -> TeacherPromptConfig:
    """TeacherPromptConfig from a YAML file mirroring ``config/teacher_prompt/default.yaml`` (None: the defaults)."""
    if path is None:
        return TeacherPromptConfig()
    values = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(values) - set(TeacherPromptConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown teacher_prompt keys {sorted(unknown)}")
    return TeacherPromptConfig(**values)


def source_name(source: str) -> str:
    """A short name for an input: the file stem, or the last part of a hub dataset name."""
    return Path(source).stem if Path(source).suffix in _FILE_SUFFIXES else source.rstrip("/").split("/")[-1]


def iter_records(source: str, hf_split: str = "train") -> Iterator[Record]:
    """Rows of a local JSONL/parquet file, or of a Hugging Face dataset (hub name or local directory).

    JSONL lines that are not JSON objects come back as ``Record(position, None, error)``; blank lines are
    skipped. A missing local file, or a hub dataset that cannot be loaded (e.g. no network), is a ValueError.
    """
    path = Path(source)
    kind = _FILE_SUFFIXES.get(path.suffix)
    if kind is not None and not path.is_file():
        raise ValueError(f"input file not found: {source}")
    if kind == "jsonl":
        yield from _iter_jsonl(path)
    elif kind == "parquet":
        for position, data in enumerate(pq.read_table(path).to_pylist()):
            yield Record(position, data)
    else:
        for position, data in enumerate(_load_hf(source, hf_split)):
            yield Record(position, dict(data))


def _iter_jsonl(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as handle:
        for position, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                yield Record(position, None, f"line {position + 1}: invalid JSON ({err.msg})")
                continue
            if isinstance(data, dict):
                yield Record(position, data)
            else:
                yield Record(position, None, f"line {position + 1}: not a JSON object")


def _load_hf(source: str, split: str):
    """A hub dataset name, a ``save_to_disk`` directory (Dataset or DatasetDict) or a directory of data files."""
    import datasets  # only for hub / dataset-directory inputs

    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(
                    f"{source}: no split {split!r}; splits: {sorted(loaded)} (choose with --hf-split)"
                )
            return loaded[split]
        return loaded
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as err:  # the hub client raises many types (offline, not found, auth)
        raise ValueError(
            f"cannot load Hugging Face dataset {source!r} (split {split!r}): {type(err).__name__}: {err}. "
            "Without hub access, pass a local .jsonl or .parquet file or a save_to_disk directory instead."
        ) from err
