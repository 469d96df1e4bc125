"""recipe/atesd/evaluate_run.py (engine replaced by a recorder) and the toy-world evaluation pieces of
recipe/atesd/eval/evaluate.py (grader, verl-row parquet benchmarks, the evaluate_toy config) — no vLLM."""

import json

import pandas as pd
import pytest
import test_export
from test_export import fp32_model, write_checkpoint

from recipe.atesd import evaluate_run as er
from recipe.atesd.eval import evaluate
from recipe.atesd.export import CheckpointError
from recipe.atesd.table import read_scores

mesh = test_export.mesh  # the 1-process gloo mesh and the toy tokenizer (module-scoped fixtures)
tokenizer = test_export.tokenizer


@pytest.fixture
def run_dir(tmp_path, mesh, tokenizer):
    """A run named like the presets, <method>-s<seed>, with checkpoints at steps 2 and 4."""
    model = fp32_model()
    root = tmp_path / "toy-atesd-s3" / "checkpoints"
    for step in (2, 4):
        write_checkpoint(root, step, dict(model.state_dict()), model.config, tokenizer, mesh, world=1)
    return root.parent


@pytest.fixture
def engine(monkeypatch):
    """Stands in for evaluate.run: records the config, checks the export is there, writes a summary."""
    calls = []

    def fake_run(cfg):
        from pathlib import Path

        assert (Path(cfg.model_path) / "export.json").is_file(), "evaluated before the export finished"
        calls.append(cfg)
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        value = 0.1 * len(calls)
        summary = {
            "n_samples": cfg.n_samples,
            "mean": value,
            "benchmarks": {b: {f"mean@{cfg.n_samples}": value} for b in cfg.benchmarks},
        }
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(evaluate, "run", fake_run)
    return calls


def test_every_step_is_exported_evaluated_and_cleaned_up(run_dir, tmp_path, engine):
    out = tmp_path / "eval"
    summaries = er.main([str(run_dir), "--config", "evaluate_toy", "--out", str(out), "--", "n_samples=2"])
    assert sorted(summaries) == [2, 4] and len(engine) == 2
    cfg = engine[0]
    assert cfg.grader_kind == "toy" and cfg.benchmarks == ["val"] and cfg.n_samples == 2
    assert cfg.output_dir == str(out / "toy-atesd-s3" / "step_2")
    assert not (out / "toy-atesd-s3" / "models" / "step_2").exists()  # removed after its evaluation
    meta = json.loads((out / "toy-atesd-s3" / "run.json").read_text())
    assert (meta["method"], meta["seed"], meta["config"], meta["overrides"]) == (
        "toy-atesd",
        3,
        "evaluate_toy",
        ["n_samples=2"],
    )
    assert meta["model"] is None  # the stand-in run recorded no model.json
    scores = read_scores([out])
    assert {(s.method, s.seed, s.step) for s in scores} == {("toy-atesd", 3, 2), ("toy-atesd", 3, 4)}


def test_run_json_names_the_model_the_run_recorded(run_dir, tmp_path, engine):
    """The model record the entry point wrote to the checkpoint root (model.json) is carried into run.json."""
    from recipe.atesd.data.manifest import record_run_model

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    record = record_run_model(base, run_dir / "checkpoints", resuming=False)
    out = tmp_path / "eval"
    er.main(
        [str(run_dir), "--config", "evaluate_toy", "--out", str(out), "--steps", "2", "--", "n_samples=2"]
    )
    meta = json.loads((out / "toy-atesd-s3" / "run.json").read_text())
    assert meta["model"] == record and len(record["sha256"]) == 64 and record["source"] == "hashed"


def test_rerun_skips_finished_steps_and_resumes_the_rest(run_dir, tmp_path, engine):
    out = tmp_path / "eval"
    args = [str(run_dir), "--config", "evaluate_toy", "--out", str(out), "--steps", "2", "--", "n_samples=2"]
    er.main(args)
    er.main(args)
    assert len(engine) == 1  # step 2 done: no export, no engine
    er.main([*args[:-3], "4", "--", "n_samples=2"])
    assert [c.output_dir.rsplit("_", 1)[1] for c in engine] == ["2", "4"]
    # other evaluation settings in the same folder are refused (run.json), not mixed into the table
    with pytest.raises(ValueError, match="'overrides' was \\['n_samples=2'\\], now \\['n_samples=3'\\]"):
        er.main([*args[:-1], "n_samples=3"])


def test_keep_exports(run_dir, tmp_path, engine):
    out = tmp_path / "eval"
    er.main([str(run_dir), "--config", "evaluate_toy", "--out", str(out), "--steps", "4", "--keep-exports"])
    assert (out / "toy-atesd-s3" / "models" / "step_4" / "model.safetensors").is_file()


def test_missing_step_names_the_saved_ones(run_dir, tmp_path, engine):
    with pytest.raises(CheckpointError, match=r"global_step_3: no such checkpoint \(saved: \[2, 4\]\)"):
        er.main([str(run_dir), "--config", "evaluate_toy", "--out", str(tmp_path / "e"), "--steps", "3"])
    assert engine == []


def test_method_and_seed(run_dir, tmp_path):
    assert er.method_and_seed("qwen3-1.7b-fixed-a0.5-s2", None, None) == ("qwen3-1.7b-fixed-a0.5", 2)
    assert er.method_and_seed("demo", "atesd", 0) == ("atesd", 0)
    assert er.run_name(run_dir / "checkpoints") == "toy-atesd-s3" == er.run_name(run_dir)
    with pytest.raises(ValueError, match="pass --method and --seed"):
        er.method_and_seed("demo", None, None)


def test_per_step_keys_cannot_be_overridden(run_dir, tmp_path):
    with pytest.raises(ValueError, match="override model_path=... is set by evaluate_run per step"):
        er.evaluate_run(run_dir, tmp_path / "e", config="evaluate_toy", overrides=["model_path=/x"])


# --- toy world in recipe.atesd.eval.evaluate ---


def test_toy_grade_is_exact_match_of_the_last_box():
    assert evaluate.toy_grade("1+2=3\n\\boxed{3}", "3").correct
    wrong = evaluate.toy_grade("\\boxed{3} then \\boxed{4}", "3")
    assert (wrong.correct, wrong.answer, wrong.status) == (False, "4", "ok")
    none = evaluate.toy_grade("no box", "3")
    assert (none.correct, none.answer, none.status) == (False, None, "no_answer")
    assert evaluate.GRADERS["math"] is evaluate.grade


def test_benchmark_from_verl_rows(tmp_path):
    rows = [
        {"extra_info": {"id": "t-0", "problem": "add 1 2 mod 10", "answer": "3"}},
        {"extra_info": {"id": "t-1", "problem": "add 4 4 mod 10", "answer": "8"}},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "val.parquet")
    assert evaluate.load_benchmark(tmp_path, "val", 1) == [rows[0]["extra_info"]]
    pd.DataFrame([{"extra_info": {"id": "t-0", "problem": "p", "answer": ""}}]).to_parquet(
        tmp_path / "bad.parquet"
    )
    with pytest.raises(ValueError, match=r"bad.parquet:row 0: field 'answer' must be a non-empty string"):
        evaluate.load_benchmark(tmp_path, "bad", None)
    with pytest.raises(ValueError, match="no file .*missing.jsonl or missing.parquet"):
        evaluate.load_benchmark(tmp_path, "missing", None)


def test_evaluate_toy_config_dry_run(tmp_path, capsys):
    """The toy config mirrors the world: thinking off, "{problem}", the toy grader, 64 new tokens."""
    pd.DataFrame([{"extra_info": {"id": "t-0", "problem": "add 1 2 mod 10", "answer": "3"}}]).to_parquet(
        tmp_path / "val.parquet"
    )
    cfg = er.compose(
        "evaluate_toy", [f"data_dir={tmp_path}", "model_path=unused", f"output_dir={tmp_path / 'o'}"]
    )
    assert (cfg.enable_thinking, cfg.student_template, cfg.grader_kind) == (False, "{problem}", "toy")
    assert cfg.sampling.max_new_tokens == 64
    cfg.dry_run = True
    assert evaluate.run(cfg) is None
    assert "val: 1 problems x 8 samples, 8 to generate" in capsys.readouterr().out
    cfg.grader_kind = "nope"
    with pytest.raises(ValueError, match="grader_kind: invalid value"):
        evaluate.run(cfg)


def test_dry_run_exports_and_writes_nothing(run_dir, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(evaluate, "run", lambda cfg: seen.append(cfg.model_path))
    out = tmp_path / "eval"
    er.main([str(run_dir), "--config", "evaluate_toy", "--out", str(out), "--", "dry_run=true"])
    assert seen == [str(out / "toy-atesd-s3" / "models" / f"step_{s}") for s in (2, 4)]
    assert not out.exists()
