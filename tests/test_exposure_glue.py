"""Per-difficulty exposure through the verl glue, without Ray (docs/method.md §2.4, issue 14).

The worker builds each row's teacher prompt with its own bucket's α (recipe/atesd/glue/worker.py, through the
same ``_token_losses`` path verl drives); a one-bucket table is the scalar path bit for bit; the trainer's
exposure table, per-bucket metrics and checkpoint state (recipe/atesd/glue/trainer.py) round-trip.
"""

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_qwen
from omegaconf import OmegaConf
from test_controller import bump_progress, drive, stats
from test_worker_loss import TEMPERATURE, make_worker, micro_batch, responses_for, run_micro_batch
from transformers import AutoTokenizer

from recipe.atesd.data.tiny_model import tokenizer_dir
from recipe.atesd.method.controller import ControllerConfig, ExposureController
from recipe.atesd.method.difficulty import ExposureTable, row_buckets
from recipe.atesd.method.prompts import TeacherPromptConfig, teacher_prompt_ids
from recipe.atesd.method.scoring import build_teacher_batch

EXPOSURE = TeacherPromptConfig(segmenter="sentences")
LEVELS = [2, 5, 8, 3, 7, 4]  # toy-world-like extra_info.difficulty per row
EDGES = (4.0, 7.0)  # buckets: d < 4 → 0, 4 ≤ d < 7 → 1, d ≥ 7 → 2
BUCKET_ALPHAS = (1.0, 0.5, 0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_dir())


@pytest.fixture(scope="module")
def rows():
    frame = pd.read_parquet(REPO_ROOT / "data/tiny/train.parquet").head(len(LEVELS))
    infos = [dict(info) for info in frame["extra_info"]]
    for info, level in zip(infos, LEVELS, strict=True):
        info["difficulty"] = level
    return infos


def table_worker(tokenizer, teacher, table: ExposureTable):
    worker = make_worker(tokenizer, teacher, EXPOSURE, alpha=None)
    worker.set_exposure(table)
    return worker


def expected_prompt(tokenizer, info, alpha):
    return teacher_prompt_ids(
        tokenizer,
        info["problem"],
        info["reference_solution"],
        alpha,
        EXPOSURE,
        max_len=EXPOSURE.max_length,
        answer=info["answer"],
    ).ids


def spy_teacher_batches(monkeypatch):
    """Record every TeacherBatch the worker's ``_token_losses`` hands the teacher forward."""
    from recipe.atesd.glue import worker as worker_module

    seen, real = [], worker_module.teacher_response_logits

    def recording(teacher, batch, device):
        seen.append(batch)
        return real(teacher, batch, device)

    monkeypatch.setattr(worker_module, "teacher_response_logits", recording)
    return seen


def same_batch(a, b) -> bool:
    return (
        torch.equal(a.input_ids, b.input_ids)
        and torch.equal(a.attention_mask, b.attention_mask)
        and torch.equal(a.position_ids, b.position_ids)
        and a.keep == b.keep
        and torch.equal(a.rows, b.rows)
    )


# ---------------------------------------------------------------- (a) per-sample α reaches each teacher prompt


def test_each_rows_teacher_prompt_uses_its_buckets_alpha(tokenizer, rows, monkeypatch):
    """Through the worker's loss (``StudentOutputLoss``): row r's teacher sequence is c_T(α_{bucket(d_r)}) ⊕ ŷ_r exactly."""
    vocab = len(tokenizer)
    student, teacher = tiny_qwen(vocab, 1), tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=7)
    n_tokens = sum(len(r) for r in responses)
    seen = spy_teacher_batches(monkeypatch)
    worker = table_worker(tokenizer, teacher, ExposureTable(3, BUCKET_ALPHAS, EDGES))
    td, prompts = micro_batch(tokenizer, EXPOSURE, rows, responses, n_tokens)
    loss = run_micro_batch(worker, student, td, prompts, responses)
    assert torch.isfinite(loss)
    buckets = [0, 1, 2, 0, 2, 1]  # LEVELS under EDGES, by hand
    want = [expected_prompt(tokenizer, info, BUCKET_ALPHAS[k]) for info, k in zip(rows, buckets, strict=True)]
    # the three α's give three different prompts for one problem: a wrong α could not pass
    assert len({tuple(expected_prompt(tokenizer, rows[0], a)) for a in BUCKET_ALPHAS}) == 3
    assert len(seen) == 1 and same_batch(
        seen[0], build_teacher_batch(want, responses, tokenizer.pad_token_id)
    )
    assert set(worker._prompt_cache) == {  # (row id, teacher context, α): one view, the configured context
        (info["id"], "privileged", BUCKET_ALPHAS[k]) for info, k in zip(rows, buckets, strict=True)
    }
    # per-bucket KL accounting covers every response token exactly once
    report = worker._report
    assert sum(report.bucket_tokens) == report.n_tokens == n_tokens
    lengths = [len(r) for r in responses]
    assert report.bucket_tokens == [
        sum(n for n, k in zip(lengths, buckets, strict=True) if k == b) for b in range(3)
    ]
    # Σ per-bucket KL = Σ token KL; both float64 sums of the same fp32 values, order differs: 1e-9 relative
    assert sum(report.bucket_kl_sum) == pytest.approx(sum(report.token_kl), rel=1e-9)


def test_probe_teacher_view_uses_each_probe_rows_bucket(tokenizer, rows):
    """g scores each probe row under its own bucket's α (docs/method.md §2.4)."""
    from recipe.atesd.method.probe import ProbeSet

    probe = ProbeSet(rows, tokenizer, EXPOSURE)
    worker = table_worker(tokenizer, tiny_qwen(len(tokenizer), 2), ExposureTable(0, BUCKET_ALPHAS, EDGES))
    chunk = next(probe.shard(0, 1, len(rows)))
    alphas, buckets = worker._row_alphas(chunk.rows)
    assert buckets == [0, 1, 2, 0, 2, 1] and alphas == [BUCKET_ALPHAS[k] for k in buckets]
    prompts, _ = probe.teacher_view(chunk, alphas, EXPOSURE.max_length)
    assert prompts == [expected_prompt(tokenizer, info, a) for info, a in zip(rows, alphas, strict=True)]


# ---------------------------------------------------------------- (b) bucket assignment from extra_info


def test_bucket_assignment_from_extra_info_difficulty(rows):
    assert row_buckets(rows, EDGES, "dataset_level", "difficulty") == [0, 1, 2, 0, 2, 1]
    assert row_buckets(rows, (), "dataset_level", "no_such_key") == [0] * len(rows)  # K = 1 never reads d
    # edges are ≤-inclusive on the upper bucket: d = 4 and d = 7 sit in buckets 1 and 2
    assert row_buckets([{"difficulty": 4}, {"difficulty": 7}], EDGES, "dataset_level", "difficulty") == [1, 2]
    with pytest.raises(ValueError, match=r"row 1 has no extra_info\.level"):
        row_buckets([{"level": 1}, {"difficulty": 2}], EDGES, "dataset_level", "level")


# ---------------------------------------------------------------- (d) K = 1 table = the scalar path, bit for bit


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
def test_one_bucket_table_is_the_scalar_path_bit_for_bit(tokenizer, rows, alpha, monkeypatch):
    """The teacher batch of a one-bucket table is the one the scalar α builds (teacher_prompt_ids per row at α,
    as the worker did before issue 14), and the loss equals a three-bucket table holding α in every bucket."""
    vocab = len(tokenizer)
    teacher = tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=11)
    n_tokens = sum(len(r) for r in responses)
    seen = spy_teacher_batches(monkeypatch)
    losses = []
    for table in (ExposureTable(0, (alpha,)), ExposureTable(0, (alpha,) * 3, EDGES)):
        worker = table_worker(tokenizer, teacher, table)
        td, prompts = micro_batch(tokenizer, EXPOSURE, rows, responses, n_tokens)
        losses.append(run_micro_batch(worker, tiny_qwen(vocab, 1), td, prompts, responses))
    scalar = build_teacher_batch(
        [expected_prompt(tokenizer, info, alpha) for info in rows], responses, tokenizer.pad_token_id
    )
    assert same_batch(seen[0], scalar) and same_batch(seen[1], scalar)
    assert torch.equal(losses[0], losses[1])


# ---------------------------------------------------------------- trainer: table, metrics, state


class LocalActor:
    """``actor.method.remote(...)`` on a local object (the trainer talks to a Ray actor; ``ray.get`` patched)."""

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        return SimpleNamespace(remote=getattr(self._obj, name))


def trainer_with(ctrl, edges, folder, monkeypatch):
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from recipe.atesd.glue import trainer as trainer_module

    monkeypatch.setattr(trainer_module.ray, "get", lambda x: x)
    monkeypatch.setattr(PPOTrainerSync, "_save_checkpoint", lambda self: None)
    t = trainer_module.ATESDTrainer.__new__(trainer_module.ATESDTrainer)
    t.config = OmegaConf.create(
        {
            "trainer": {"default_local_dir": str(folder)},
            "actor_rollout_ref": {"model": {"path": "unused", "lora_rank": 0}, "actor": {"checkpoint": {}}},
        }
    )
    t.controller = LocalActor(ctrl)
    t._bucket_edges, t._skipped_steps, t._last_finite = tuple(edges), 0, (0.0, 0.0, 0.0)
    return t


def per_bucket_controller(seed=5):
    cfg = ControllerConfig(
        hold_window=3, lookahead=7, batch_decisions=2, granularity="per_difficulty", num_buckets=3
    )
    ctrl = ExposureController(cfg, total_steps=200, seed=seed)
    ctrl.observe_baseline(3.0)
    return ctrl


def continue_run(ctrl, nll) -> list:
    """Steps 40..69 of tests/test_controller.py::drive, recording each step's exposure table."""
    from recipe.atesd.glue.trainer import exposure_table

    tables = []
    for t in range(40, 70):
        d = ctrl.decide(t)
        tables.append(exposure_table(d, EDGES))
        nll -= bump_progress(d.alpha, 0.02 * math.sin(1.7 * t))
        ctrl.observe(t, stats(nll, ground=-1.0 - 0.1 * math.cos(t), loss=0.5 + 0.01 * t))
    return tables


def test_trainer_state_round_trips_per_bucket_state(tmp_path, monkeypatch):
    """Save at step 40 (mid window), restore into a fresh trainer + controller: the same tables from then on,
    bit for bit, and the bucket edges come back; other edges are refused naming the keys. The state (policy,
    AdamW moments, generator, pending decisions) is read back with ``torch.load(weights_only=True)``
    (``load_atesd_state``): a genuine checkpoint needs no pickle."""
    from recipe.atesd.glue.trainer import load_atesd_state

    ctrl = per_bucket_controller()
    _, _, nll = drive(ctrl, range(40), 3.0)
    trainer = trainer_with(ctrl, EDGES, tmp_path, monkeypatch)
    trainer.global_steps = 40
    trainer._skipped_steps, trainer._last_finite = 2, (0.4, 0.3, -0.9)
    trainer._save_checkpoint()
    reference = continue_run(ctrl, nll)

    fresh = per_bucket_controller(seed=99)  # another seed: only a restored state can give the same tables
    resumed = trainer_with(fresh, EDGES, tmp_path, monkeypatch)
    resumed._resume_folder = str(tmp_path / "global_step_40")
    resumed._restore_atesd_state()
    assert (resumed._skipped_steps, resumed._last_finite) == (2, (0.4, 0.3, -0.9))
    tables = continue_run(fresh, nll)
    assert tables == reference  # ExposureTable equality: window ids, every bucket's α, edges; exact floats
    assert len({t.bucket_alphas for t in tables}) > 1 and all(len(set(t.bucket_alphas)) == 3 for t in tables)
    saved = load_atesd_state(str(tmp_path / "global_step_40"))
    assert saved["bucket_edges"] == [4.0, 7.0]
    assert saved["controller"]["updates"] > 0 and saved["controller"]["optimizer"]["state"]
    assert saved["controller"]["pending"]

    other = trainer_with(per_bucket_controller(), (3.0, 6.0), tmp_path, monkeypatch)
    other._resume_folder = str(tmp_path / "global_step_40")
    with pytest.raises(ValueError, match=r"bucket edges \[4\.0, 7\.0\] differ.*controller\.bucket_edges"):
        other._restore_atesd_state()


def test_worker_disagreement_names_the_tables():
    from recipe.atesd.glue.trainer import _check_workers

    table = ExposureTable(2, BUCKET_ALPHAS, EDGES)
    _check_workers([table, ExposureTable(2, BUCKET_ALPHAS, EDGES)], table)
    with pytest.raises(
        RuntimeError, match=r"disagree.*\(1, ExposureTable\(window_id=2, bucket_alphas=\(1\.0, 0\.5, 0\.5\)"
    ):
        _check_workers([table, ExposureTable(2, (1.0, 0.5, 0.5), EDGES)], table)
    with pytest.raises(RuntimeError, match=r"\(0, None\)"):
        _check_workers([None], table)


def test_bucket_metrics_occupancy_accuracy_and_kl():
    from recipe.atesd.glue.trainer import _bucket_kl, bucket_batch_metrics
    from recipe.atesd.glue.worker import UpdateReport

    m = bucket_batch_metrics([0, 2, 2, 0, 2], [1.0, 0.0, 1.0, 0.0, 1.0], 3)
    assert m == {
        "exposure/occupancy_bucket_0": 2 / 5,
        "exposure/occupancy_bucket_1": 0.0,
        "exposure/occupancy_bucket_2": 3 / 5,
        "exposure/accuracy_bucket_0": 0.5,
        "exposure/accuracy_bucket_2": 2 / 3,
    }
    reports = [
        UpdateReport(bucket_kl_sum=[1.0, 0.0, 3.0], bucket_tokens=[4, 0, 2]),
        UpdateReport(bucket_kl_sum=[1.0, 0.0, 1.0], bucket_tokens=[4, 0, 6]),
    ]
    assert _bucket_kl(reports) == {"distill/kl_mean_bucket_0": 2.0 / 8, "distill/kl_mean_bucket_2": 4.0 / 8}
    assert _bucket_kl([UpdateReport(), UpdateReport()]) == {}  # batch granularity: no per-bucket keys
    assert not math.isnan(sum(m.values()))
    _ = TEMPERATURE  # the worker helpers' temperature (tests/test_worker_loss.py)
