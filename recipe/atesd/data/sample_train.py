"""Deterministic sample of training JSONL files (the source of the shipped tiny set, data/train/sample.jsonl).

    python -m recipe.atesd.data.sample_train --input /work/shared/data/train/math_level5.jsonl \
        /work/shared/data/train/aime_1983_2023.jsonl --per-file 128 --max-solution-chars 1200 \
        --out data/train/sample.jsonl

From each file: the rows whose solution has at most ``--max-solution-chars`` characters, ranked by a seeded
hash of their id, the first ``--per-file`` kept in file order. Rows are copied unchanged plus a ``source``
field (the file stem), which prepare_train uses as data_source.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recipe.atesd.data.prepare_train import split_key


def sample_file(path: Path, per_file: int, max_solution_chars: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    short = [i for i, row in enumerate(rows) if len(row["solution"]) <= max_solution_chars]
    if len(short) < per_file:
        raise ValueError(f"{path}: only {len(short)} rows with solution <= {max_solution_chars} chars")
    keep = sorted(sorted(short, key=lambda i: split_key(rows[i]["id"], seed))[:per_file])
    return [{**rows[i], "source": path.stem} for i in keep]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-file", type=int, default=128)
    parser.add_argument("--max-solution-chars", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for path in args.input:
            for row in sample_file(Path(path), args.per_file, args.max_solution_chars, args.seed):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
