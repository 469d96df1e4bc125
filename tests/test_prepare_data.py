"""prepare_train / prepare_eval: reject accounting, parquet schema, deterministic splits, shipped files."""

import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO_ROOT

from recipe.atesd.data import prepare_eval, prepare_train
from recipe.atesd.data.reference_stats import percentiles, qwen3_tokenizer_dir, reference_stats
from recipe.atesd.data.schema import PARQUET_SCHEMA
from recipe.atesd.method.answer import last_box
from recipe.atesd.method.prompts import (
    SEGMENTERS,
    TeacherPromptConfig,
    build_student_messages,
    split_segments,
    teacher_prompt_ids,
)

SPLITS = ("train", "val", "probe")

GOOD = [
    {
        "id": f"g{i}",
        "problem": f"What is {i}+{i}?",
        "solution": f"Add.\n\nIt is $\\boxed{{{2 * i}}}$.",
        "answer": None,
    }
    for i in range(30)
]
GOOD[0]["answer"] = "zero"  # a given answer column wins over the box
GOOD[1]["id"] = 101  # integer ids become strings
del GOOD[2]["id"]  # a missing id becomes a hash of the problem
GOOD[3]["source"] = "custom_source"  # per-row data_source

BAD = {  # reason -> row
    "non_text": {"id": "b1", "problem": ["not", "text"], "solution": "x \\boxed{1}"},
    "missing_problem": {"id": "b2", "problem": "  ", "solution": "x \\boxed{1}"},
    "missing_solution": {"id": "b3", "problem": "p3"},
    "no_final_answer": {"id": "b4", "problem": "p4", "solution": "no box here"},
    "solution_too_long": {"id": "b5", "problem": "p5", "solution": "y" * 500 + " \\boxed{1}"},
    "duplicate_id": {"id": "g5", "problem": "another", "solution": "z \\boxed{2}"},
}


def _write_input(path: Path, shuffle_seed: int | None = None) -> None:
    good = [json.dumps({k: v for k, v in r.items() if v is not None}) for r in GOOD]
    lines = good + [json.dumps(r) for r in BAD.values()] + ["{not json"]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(lines)
        lines.sort(key=lambda line: line != good[5])  # the duplicate of g5 must still come after g5
    path.write_text("\n".join(lines) + "\n")


def _run(tmp_path: Path, name: str, *extra: str, shuffle_seed: int | None = None) -> tuple[dict, Path]:
    src, out = tmp_path / f"{name}.jsonl", tmp_path / name
    _write_input(src, shuffle_seed)
    argv = ["--input", str(src), "--out", str(out), "--val-size", "5", "--probe-size", "4"]
    return prepare_train.main(argv + ["--max-solution-chars", "200", *extra]), out


def _ids(out: Path, split: str) -> list[str]:
    return [e["id"] for e in pq.read_table(out / f"{split}.parquet").column("extra_info").to_pylist()]


def test_reject_counts_rejects_file_and_no_good_row_lost(tmp_path):
    summary, out = _run(tmp_path, "run")
    expected = {reason: 1 for reason in BAD} | {"invalid_json": 1}
    assert summary["rejects_by_reason"] == {r: expected.get(r, 0) for r in prepare_train.REASONS}
    assert (summary["n_read"], summary["n_accepted"], summary["n_rejected"]) == (37, 30, 7)
    assert summary["splits"] == {"train": 21, "val": 5, "probe": 4}
    assert json.loads((out / "summary.json").read_text()) == summary

    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"]: r["row"] for r in rejects} == {**BAD, "invalid_json": None}
    assert all(r["detail"] and r["position"] >= 30 for r in rejects)

    rows = [row for split in SPLITS for row in pq.read_table(out / f"{split}.parquet").to_pylist()]
    by_problem = {row["extra_info"]["problem"]: row for row in rows}
    assert sorted(by_problem) == sorted(g["problem"] for g in GOOD)
    assert sorted(row["extra_info"]["index"] for row in rows) == list(range(30))
    for good in GOOD:
        row = by_problem[good["problem"]]
        answer = good["answer"] or good["solution"].split("boxed{")[1].split("}")[0]
        assert row["reward_model"] == {"style": "rule", "ground_truth": answer}
        assert row["extra_info"]["answer"] == answer
        assert row["extra_info"]["reference_solution"] == good["solution"]
        assert row["prompt"] == build_student_messages(good["problem"], TeacherPromptConfig())
        assert row["ability"] == "math"
        assert row["data_source"] == good.get("source", "run")
    assert by_problem[GOOD[1]["problem"]]["extra_info"]["id"] == "101"
    assert by_problem[GOOD[2]["problem"]]["extra_info"]["id"].startswith("auto-")
    for split in SPLITS:
        assert {r["extra_info"]["split"] for r in pq.read_table(out / f"{split}.parquet").to_pylist()} <= {
            split
        }


def test_parquet_schema_is_exact(tmp_path):
    _, out = _run(tmp_path, "run")
    for split in SPLITS:
        assert pq.read_schema(out / f"{split}.parquet").remove_metadata() == PARQUET_SCHEMA
    assert PARQUET_SCHEMA.field("prompt").type == pa.list_(
        pa.struct([("role", pa.string()), ("content", pa.string())])
    )
    assert PARQUET_SCHEMA.field("extra_info").type.field("index").type == pa.int64()


def test_split_is_deterministic_and_order_independent(tmp_path):
    _, first = _run(tmp_path, "a")
    _, again = _run(tmp_path, "b")
    _, shuffled = _run(tmp_path, "c", shuffle_seed=3)
    _, reseeded = _run(tmp_path, "d", "--seed", "1")
    for split in SPLITS:
        assert (
            pq.read_table(first / f"{split}.parquet")
            .drop_columns(["data_source"])
            .equals(pq.read_table(again / f"{split}.parquet").drop_columns(["data_source"]))
        )
        assert sorted(_ids(first, split)) == sorted(_ids(shuffled, split))
    assert sorted(_ids(first, "val")) != sorted(_ids(reseeded, "val"))


def test_parquet_input_with_other_column_names(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"uid": g["problem"], "question": g["problem"], "trace": g["solution"]} for g in GOOD]
        ),
        src,
    )
    argv = ["--input", str(src), "--out", str(tmp_path / "o"), "--val-size", "2", "--probe-size", "2"]
    keys = ["--field-map", "problem=question,solution=trace,id=uid", "--data-source", "ds"]
    summary = prepare_train.main(argv + keys + ["--max-rows", "10"])
    assert (summary["n_read"], summary["n_accepted"], summary["splits"]["train"]) == (10, 10, 6)
    rows = pq.read_table(tmp_path / "o" / "train.parquet").to_pylist()
    assert {r["data_source"] for r in rows} == {"ds"}


def test_too_small_for_requested_splits(tmp_path):
    with pytest.raises(SystemExit, match="--val-size 27 \\+ --probe-size 4 exceed the 30 accepted rows"):
        _run(tmp_path, "run", "--val-size", "27")


def test_missing_file_and_offline_hub_fail_clearly(tmp_path):
    with pytest.raises(SystemExit, match="input file not found: .*nope.jsonl"):
        prepare_train.main(["--input", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "recipe.atesd.data.prepare_train",
        "--input",
        "no-org/no-data",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot load Hugging Face dataset 'no-org/no-data'" in proc.stderr


def test_prepare_eval_from_shipped_jsonl(tmp_path):
    counts = prepare_eval.main(["--input-dir", str(REPO_ROOT / "data/eval"), "--out-dir", str(tmp_path)])
    assert counts == {"aime24": 30, "aime25": 30, "hmmt25": 30}
    for name in counts:
        source = [
            json.loads(line) for line in (REPO_ROOT / f"data/eval/{name}.jsonl").read_text().splitlines()
        ]
        rows = pq.read_table(tmp_path / f"{name}.parquet").to_pylist()
        assert pq.read_schema(tmp_path / f"{name}.parquet").remove_metadata() == PARQUET_SCHEMA
        assert [r["reward_model"]["ground_truth"] for r in rows] == [s["answer"] for s in source]
        assert [r["extra_info"]["id"] for r in rows] == [s["id"] for s in source]
        assert {r["data_source"] for r in rows} == {name}
        assert {r["extra_info"]["reference_solution"] for r in rows} == {""}
        assert rows[0]["prompt"] == build_student_messages(source[0]["problem"], TeacherPromptConfig())
        shipped = pq.read_table(REPO_ROOT / f"data/eval/{name}.parquet")
        assert shipped.equals(pq.read_table(tmp_path / f"{name}.parquet"))


def test_prepare_eval_bad_row_names_row_and_field(tmp_path):
    (tmp_path / "aime24.jsonl").write_text(
        '{"id": "a", "problem": "p", "answer": 7}\n{"id": "b", "problem": "q"}\n'
    )
    with pytest.raises(SystemExit, match="aime24 row 1: answer must be a non-empty string"):
        prepare_eval.main(
            ["--input-dir", str(tmp_path), "--benchmarks", "aime24", "--out-dir", str(tmp_path)]
        )


def test_shipped_tiny_set_regenerates(tmp_path):
    argv = ["--input", str(REPO_ROOT / "data/train/sample.jsonl"), "--out", str(tmp_path)]
    summary = prepare_train.main(argv + ["--val-size", "32", "--probe-size", "32"])
    assert summary["splits"] == {"train": 192, "val": 32, "probe": 32}
    for split in SPLITS:
        assert pq.read_table(REPO_ROOT / f"data/tiny/{split}.parquet").equals(
            pq.read_table(tmp_path / f"{split}.parquet")
        )


# --- The papers' training set (issue 19): `make data-paper` run offline on a local dataset in its schema ---

SAMPLE = [json.loads(line) for line in (REPO_ROOT / "data/train/sample.jsonl").read_text().splitlines()]
# OPSD's schema (siyanzhao/Openthoughts_math_30k_opsd, split train): problem + solution, nothing else.
PAPER_GOOD = [{"problem": r["problem"], "solution": r["solution"]} for r in SAMPLE[:160]]
PAPER_BAD = {  # reason -> row; the schema's columns are strings, so bad rows are empty, unboxed or repeated
    "missing_problem": {"problem": None, "solution": "x \\boxed{1}"},
    "missing_solution": {"problem": "p?", "solution": " "},
    "no_final_answer": {"problem": "q?", "solution": "no box here"},
    "duplicate_id": dict(PAPER_GOOD[7]),  # no id column: the id is a hash of the problem
}


def _save_dataset(path: Path, rows: list[dict], split: str | None = None) -> Path:
    """``datasets.Dataset.save_to_disk`` (a DatasetDict with one ``split`` when given)."""
    import datasets

    data = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({split: data}) if split else data).save_to_disk(str(path))
    return path


def _make_command(dataset: Path, fields: str, out: Path) -> list[str]:
    """The `make data-paper` command line (`make -n`: printed, not run) with this machine's interpreter."""
    variables = [f"PAPER_DATASET={dataset}", f"PAPER_FIELDS={fields}", f"PAPER_DATA_DIR={out}", "PY=python"]
    run = subprocess.run(
        ["make", "-n", "data-paper", *variables], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    [line] = [line for line in run.stdout.replace("\\\n", " ").splitlines() if "prepare_train" in line]
    words = shlex.split(line)
    assert words[:3] == ["python", "-m", "recipe.atesd.data.prepare_train"], words
    return [sys.executable, *words[1:]]


def _offline(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(600)
def test_make_data_paper_runs_offline_on_a_local_dataset(tmp_path):
    bad = list(PAPER_BAD.values())
    dataset = _save_dataset(tmp_path / "opsd", PAPER_GOOD[:80] + bad + PAPER_GOOD[80:])
    cmd = _make_command(dataset, "problem=problem,solution=solution", tmp_path / "processed")
    assert (
        "siyanzhao/Openthoughts_math_30k_opsd"
        in subprocess.run(
            ["make", "-n", "data-paper"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout
    )  # the default input is the papers' dataset
    run = _offline(cmd)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "processed" / "summary.json").read_text())
    assert json.loads(run.stdout[run.stdout.index("{") :]) == summary  # printed as written
    assert summary["rejects_by_reason"] == {r: int(r in PAPER_BAD) for r in prepare_train.REASONS}
    assert (summary["n_read"], summary["n_accepted"]) == (164, 160)
    assert summary["splits"] == {"train": 32, "val": 64, "probe": 64}  # the make target's sizes
    rejects = [
        json.loads(line) for line in (tmp_path / "processed" / "rejects.jsonl").read_text().splitlines()
    ]
    assert [r["position"] for r in rejects] == [80, 81, 82, 83]
    stats = summary["statistics"]
    solutions = [g["solution"] for g in PAPER_GOOD]
    assert stats["n"] == 160 and stats["reference_chars"]["max"] == max(map(len, solutions))
    assert set(stats["segments"]) == set(SEGMENTERS)
    single = sum(len(split_segments(s, "paragraph")) == 1 for s in solutions) / 160
    assert stats["segments"]["paragraph"]["single_segment_share"] == single
    assert stats["max_teacher_length"] == 16384 and stats["n_cut"] == 0
    for split in SPLITS:
        table = pq.read_table(tmp_path / "processed" / f"{split}.parquet")
        assert table.schema.remove_metadata() == PARQUET_SCHEMA
        assert {r["data_source"] for r in table.to_pylist()} == {"opsd"}


def test_renamed_columns_need_the_field_map(tmp_path, capsys):
    rows = [{"question": g["problem"], "answer": g["solution"]} for g in PAPER_GOOD[:40]]
    dataset = _save_dataset(tmp_path / "renamed", rows, split="train")
    argv = ["--input", str(dataset), "--val-size", "4", "--probe-size", "4"]
    with pytest.raises(
        SystemExit, match=r"no row has the column 'problem' for problem \(columns: answer, question\)"
    ):
        prepare_train.main([*argv, "--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match=r"--field-map problem=<column>"):
        prepare_train.main([*argv, "--out", str(tmp_path / "a")])
    out = tmp_path / "b"
    summary = prepare_train.main(
        [*argv, "--out", str(out), "--field-map", "problem=question,solution=answer"]
    )
    assert summary["n_accepted"] == 40 and summary["field_map"]["answer"] is None
    rows_out = [r for split in SPLITS for r in pq.read_table(out / f"{split}.parquet").to_pylist()]
    by_problem = {r["extra_info"]["problem"]: r for r in rows_out}
    for row in rows:  # the answer column is the solution here; the ground truth comes from its last box
        info = by_problem[row["question"]]["extra_info"]
        assert info["reference_solution"] == row["answer"]
        assert info["answer"] == last_box(row["answer"]).answer
    with pytest.raises(SystemExit, match=r"no split 'test'; splits: \['train'\]"):
        prepare_train.main([*argv, "--out", str(tmp_path / "c"), "--hf-split", "test"])
    capsys.readouterr()


@pytest.mark.parametrize(
    ("field_map", "message"),
    [
        ("question=problem", "expected FIELD=COLUMN with FIELD in"),
        ("problem", "expected FIELD=COLUMN"),
        ("problem=q,solution=q", "one column to two fields"),
        ("problem=a,problem=b", "maps 'problem' twice"),
        ("solution=", "solution is required"),
    ],
)
def test_bad_field_map_is_a_clear_usage_error(tmp_path, capsys, field_map, message):
    with pytest.raises(SystemExit) as exit_info:
        prepare_train.main(["--input", "x.jsonl", "--out", str(tmp_path), "--field-map", field_map])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_field_map_defaults_and_claims():
    assert prepare_train.parse_field_map("") == (prepare_train.FIELDS, frozenset())
    mapping, explicit = prepare_train.parse_field_map("solution=answer, id=")
    assert mapping == {
        "problem": "problem",
        "solution": "answer",
        "answer": None,
        "id": None,
        "source": "source",
    }
    assert explicit == {"solution", "id"}


def test_explicitly_mapped_optional_column_must_exist(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(g) + "\n" for g in PAPER_GOOD[:12]))
    argv = ["--input", str(src), "--out", str(tmp_path / "o"), "--val-size", "2", "--probe-size", "2"]
    with pytest.raises(SystemExit, match=r"no row has the column 'final' for answer"):
        prepare_train.main([*argv, "--field-map", "answer=final"])


def test_percentiles_are_nearest_rank():
    # p_q = x_(ceil(q n / 100)): for 1..200, p50 = 100, p90 = 180, p99 = 198.
    assert percentiles(range(200, 0, -1)) == {"p50": 100, "p90": 180, "p99": 198, "max": 200}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}
    with pytest.raises(ValueError, match="empty"):
        percentiles([])


def test_reference_stats_counts_cuts_at_the_budget():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    rows = [{"id": str(i), "answer": None, **g} for i, g in enumerate(PAPER_GOOD[:20])]
    cfg = TeacherPromptConfig()
    free = reference_stats(rows, tokenizer, cfg, None)
    tokens = sorted(
        len(teacher_prompt_ids(tokenizer, r["problem"], r["solution"], 1.0, cfg).ids) for r in rows
    )
    assert free["teacher_tokens"]["max"] == tokens[-1] and free["n_cut"] == 0
    assert free["longest"]["teacher_tokens"] == tokens[-1]
    budget = tokens[-3]  # rows over it: those strictly longer than the third longest
    cut = reference_stats(rows, tokenizer, cfg, budget)
    assert cut["n_cut"] == sum(t > budget for t in tokens) >= 1
    assert cut["cut_share"] == cut["n_cut"] / 20
    with pytest.raises(ValueError, match="no accepted rows"):
        reference_stats([], tokenizer, cfg, None)
