"""Build the training parquet files (train / val / probe) from problem + reference-solution rows.

    python -m recipe.atesd.data.prepare_train --input data/train/sample.jsonl --out data/tiny \
        --val-size 32 --probe-size 32

Inputs: local .jsonl / .parquet files, or Hugging Face dataset names (needs hub access). Every rejected row
is written to ``<out>/rejects.jsonl`` with its reason; counts go to ``<out>/summary.json`` and stdout.
The split is a seeded hash of the row id, so it does not depend on input order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from recipe.atesd.data.schema import iter_records, load_prompt_config, make_row, source_name, write_parquet
from recipe.atesd.method.prompts import extract_final_answer

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", nargs="+", required=True, help="JSONL / parquet files or HF dataset names")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--problem-key", default="problem")
    parser.add_argument("--solution-key", default="solution")
    parser.add_argument("--answer-key", default="answer", help="used when present, else the last \\boxed{}")
    parser.add_argument("--id-key", default="id", help="missing ids become a hash of the problem")
    parser.add_argument("--source-key", default="source", help="per-row data_source column, if present")
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
    args = parser.parse_args(argv)
    for key in ("val_size", "probe_size", "max_rows", "max_solution_chars"):
        value = getattr(args, key)
        if value is not None and value < 0:
            parser.error(f"--{key.replace('_', '-')} must be >= 0, got {value}")
    return args


def split_key(row_id: str, seed: int) -> str:
    """Sort key of a row: sha256 of ``"{seed}:{id}"`` (the split is a function of id and seed only)."""
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def _check_row(data: dict, args: argparse.Namespace) -> tuple[str | None, str, dict]:
    """(reject reason or None, detail, cleaned fields) for one parsed row."""
    fields = {}
    for name, key in (("problem", args.problem_key), ("solution", args.solution_key)):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            return "non_text", f"{key} is {type(value).__name__}", fields
        if value is None or not value.strip():
            return f"missing_{name}", f"{key} is missing or empty", fields
        fields[name] = value
    answer = data.get(args.answer_key)
    if answer is not None and not isinstance(answer, str):
        return "non_text", f"{args.answer_key} is {type(answer).__name__}", fields
    row_id = data.get(args.id_key)
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, str | int)):
        return "non_text", f"{args.id_key} is {type(row_id).__name__}", fields
    fields["id"] = (
        str(row_id)
        if row_id is not None and str(row_id).strip()
        else "auto-" + hashlib.sha1(fields["problem"].encode()).hexdigest()[:16]
    )
    answer = answer.strip() if answer and answer.strip() else extract_final_answer(fields["solution"])
    if answer is None:
        return "no_final_answer", f"no {args.answer_key} and no \\boxed{{}} in {args.solution_key}", fields
    fields["answer"] = answer
    if args.max_solution_chars is not None and len(fields["solution"]) > args.max_solution_chars:
        return "solution_too_long", f"{len(fields['solution'])} > {args.max_solution_chars} chars", fields
    return None, "", fields


def prepare(args: argparse.Namespace) -> dict:
    """Read, filter, split and write; returns the summary (also written to ``<out>/summary.json``)."""
    cfg = load_prompt_config(args.prompt_config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accepted, rejects, seen_ids, n_read = [], [], set(), 0
    for source in args.input:
        default_source = args.data_source or source_name(source)
        records = iter_records(source, args.hf_split)
        for record in tqdm(records, desc=f"prepare {source_name(source)}", unit="row"):
            if args.max_rows is not None and record.position >= args.max_rows:
                break
            n_read += 1
            reject = {"input": source, "position": record.position}
            if record.data is None:
                rejects.append({**reject, "reason": "invalid_json", "detail": record.error, "row": None})
                continue
            reason, detail, fields = _check_row(record.data, args)
            if reason is None and fields["id"] in seen_ids:
                reason, detail = "duplicate_id", f"id {fields['id']!r} already accepted"
            if reason is not None:
                rejects.append({**reject, "reason": reason, "detail": detail, "row": record.data})
                continue
            seen_ids.add(fields["id"])
            row_source = record.data.get(args.source_key)
            fields["data_source"] = (
                args.data_source or (row_source if isinstance(row_source, str) else None) or default_source
            )
            accepted.append(fields)
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
