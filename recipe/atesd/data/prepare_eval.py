"""Build evaluation parquet files (same schema as training; reference_solution is empty).

    python -m recipe.atesd.data.prepare_eval --input-dir data/eval --out-dir data/eval
    python -m recipe.atesd.data.prepare_eval --hf-dataset ORG/NAME --name aime24 --out-dir data/eval

data_source = benchmark name, reward_model.ground_truth = answer. An evaluation set must be complete, so a
bad row is an error (naming the benchmark, row and field), not a skipped row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from recipe.atesd.data.schema import iter_records, load_prompt_config, make_row, write_parquet
from recipe.atesd.method.prompts import TeacherPromptConfig

BENCHMARKS = ("aime24", "aime25", "hmmt25")


def build_rows(name: str, source: str, args: argparse.Namespace, cfg: TeacherPromptConfig) -> list[dict]:
    """Parquet rows of one benchmark; ValueError naming the row and field on any bad row."""
    rows, seen = [], set()
    for record in tqdm(iter_records(source, args.hf_split), desc=f"eval {name}", unit="row"):
        where = f"{name} row {record.position}"
        if record.data is None:
            raise ValueError(f"{where}: {record.error}")
        problem = record.data.get(args.problem_key)
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"{where}: {args.problem_key} must be a non-empty string, got {problem!r:.60}")
        answer = record.data.get(args.answer_key)
        if isinstance(answer, int) and not isinstance(answer, bool):
            answer = str(answer)  # some copies store AIME answers as integers
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"{where}: {args.answer_key} must be a non-empty string, got {answer!r:.60}")
        row_id = str(record.data.get(args.id_key, f"{name}-{record.position}"))
        if row_id in seen:
            raise ValueError(f"{where}: duplicate {args.id_key} {row_id!r}")
        seen.add(row_id)
        rows.append(
            make_row(
                data_source=name,
                problem=problem,
                reference_solution="",
                answer=answer.strip(),
                row_id=row_id,
                index=len(rows),
                split="test",
                cfg=cfg,
            )
        )
    if not rows:
        raise ValueError(f"{name}: no rows in {source}")
    return rows


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input-dir", default="data/eval", help="holds <benchmark>.jsonl")
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    parser.add_argument(
        "--hf-dataset", default=None, help="hub dataset instead of --input-dir (needs --name)"
    )
    parser.add_argument("--name", default=None, help="benchmark name (data_source) for --hf-dataset")
    parser.add_argument("--hf-split", default="test")
    parser.add_argument("--out-dir", default="data/eval")
    parser.add_argument("--problem-key", default="problem")
    parser.add_argument("--answer-key", default="answer")
    parser.add_argument("--id-key", default="id")
    parser.add_argument(
        "--prompt-config", default=None, help="YAML mirroring config/teacher_prompt/default.yaml"
    )
    args = parser.parse_args(argv)
    if args.hf_dataset is not None and args.name is None:
        parser.error("--hf-dataset needs --name (the benchmark name used as data_source)")
    jobs = (
        {args.name: args.hf_dataset}
        if args.hf_dataset is not None
        else {name: str(Path(args.input_dir) / f"{name}.jsonl") for name in args.benchmarks}
    )
    counts = {}
    try:
        cfg = load_prompt_config(args.prompt_config)
        for name, source in jobs.items():
            rows = build_rows(name, source, args, cfg)
            write_parquet(rows, Path(args.out_dir) / f"{name}.parquet")
            counts[name] = len(rows)
    except ValueError as err:
        raise SystemExit(f"prepare_eval: error: {err}") from err
    print(counts)
    return counts


if __name__ == "__main__":
    main()
