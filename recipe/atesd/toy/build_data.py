"""Write the toy world's parquet files (``recipe/atesd/toy/task.py``) in the verl row contract.

    python -m recipe.atesd.toy.build_data --out data/toy --seed 0 --train 2000 --probe 32 --eval 112 --heldout 1024

Files: ``train.parquet`` (split train), ``probe.parquet`` (split probe: the controller's probe set),
``val.parquet`` (split eval: held-out evaluation, the runs' validation) and ``heldout.parquet`` (split eval
again, drawn apart: 1024 problems for a study's low-noise evaluation; it may share problems with val.parquet,
never with train or probe). Rows come from ``recipe/atesd/data/schema.py``'s
``make_row`` (data_source ``toy_sum``, student prompt from ``task.prompt_config()``, ground truth = the
answer digit). ``make_row`` and its ``PARQUET_SCHEMA`` have no difficulty field, so this module adds
``extra_info.difficulty`` (int) and ``extra_info.order`` (reference order) after ``make_row`` and writes
with schema.py's ``write_parquet`` and :data:`TOY_PARQUET_SCHEMA` = ``PARQUET_SCHEMA`` plus those two ``extra_info`` fields.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa

from recipe.atesd.data.schema import PARQUET_SCHEMA, make_row, write_parquet
from recipe.atesd.toy.task import DIFFICULTIES, generate, prompt_config

DATA_SOURCE = "toy_sum"
FILES = {
    "train": "train.parquet",
    "probe": "probe.parquet",
    "eval": "val.parquet",
    "heldout": "heldout.parquet",
}
# heldout: a second, larger held-out set from the eval split, for a study's low-noise evaluation (docs/toy.md,
# "Low-noise evaluation"): 1024 problems, every one of difficulty 2 and 3 the split has (17, 146), 172-173 of each other
SPLIT_OF = {"heldout": "eval"}
DEFAULT_COUNTS = {"train": 2000, "probe": 32, "eval": 112, "heldout": 1024}  # eval: 16 per difficulty 2..8


def _toy_schema() -> pa.Schema:
    index = PARQUET_SCHEMA.get_field_index("extra_info")
    info = PARQUET_SCHEMA.field(index).type
    fields = [info.field(i) for i in range(info.num_fields)]
    extended = pa.struct([*fields, pa.field("difficulty", pa.int64()), pa.field("order", pa.string())])
    return PARQUET_SCHEMA.set(index, pa.field("extra_info", extended))


TOY_PARQUET_SCHEMA = _toy_schema()


def toy_row(problem: dict, index: int, split: str, cfg=None) -> dict:
    """One parquet row: ``make_row`` of the problem, plus extra_info.difficulty and extra_info.order."""
    row = make_row(
        data_source=DATA_SOURCE,
        problem=problem["problem"],
        reference_solution=problem["reference_solution"],
        answer=problem["answer"],
        row_id=problem["id"],
        index=index,
        split=split,
        cfg=cfg or prompt_config(),
    )
    row["extra_info"].update(difficulty=problem["difficulty"], order=problem["order"])
    return row


def build(
    out: str | Path, seed: int = 0, counts: dict[str, int] | None = None, difficulties=DIFFICULTIES
) -> dict[str, int]:
    """Generate every split and write its file under ``out``; returns rows per file name."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    unknown = set(counts) - set(FILES)
    if unknown:
        raise ValueError(f"counts has unknown splits {sorted(unknown)}; expected {sorted(FILES)}")
    cfg = prompt_config()
    written = {}
    for key, name in FILES.items():
        split = SPLIT_OF.get(key, key)
        problems = generate(split, counts[key], seed, difficulties, name=key)
        rows = [toy_row(p, i, split, cfg) for i, p in enumerate(problems)]
        write_parquet(rows, Path(out) / name, TOY_PARQUET_SCHEMA)
        written[name] = len(rows)
    return written


def _difficulties(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--difficulties must be comma-separated ints, got {text!r}"
        ) from err


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=DEFAULT_COUNTS["train"], help="train rows")
    parser.add_argument("--probe", type=int, default=DEFAULT_COUNTS["probe"], help="probe rows")
    parser.add_argument(
        "--eval", type=int, default=DEFAULT_COUNTS["eval"], help="held-out rows (val.parquet)"
    )
    parser.add_argument(
        "--heldout",
        type=int,
        default=DEFAULT_COUNTS["heldout"],
        help="rows of the larger held-out set (heldout.parquet, from the eval split)",
    )
    parser.add_argument(
        "--difficulties", type=_difficulties, default=DIFFICULTIES, help="comma-separated, e.g. 2,3,4"
    )
    args = parser.parse_args(argv)
    counts = {"train": args.train, "probe": args.probe, "eval": args.eval, "heldout": args.heldout}
    written = build(args.out, args.seed, counts, args.difficulties)
    print(json.dumps({"out": str(args.out), "seed": args.seed, "rows": written}))
    return written


if __name__ == "__main__":
    main()
