"""What researchers extend is a registry entry: a dummy entry of each kind, registered by a temporary module
(as a user's own file would), runs through the controller and the worker's loss in-process.

Registries: exposure modes (``method/controller/exposure.py::EXPOSURE_MODES``), controller return terms
(``method/controller/reward.py::RETURN_TERMS``), teacher kinds (``method/teacher.py::TEACHER_KINDS``), teacher
contexts (``method/prompts.py::TEACHER_CONTEXTS``) and token weightings (``method/token_weights.py::
TOKEN_WEIGHTINGS``); the loss registry has its own tests (tests/test_losses.py).
"""

import importlib.util
import math
import textwrap

import pytest
import torch
from conftest import tiny_qwen
from test_worker_loss import (
    dense_loss,
    dense_reference,
    responses_for,
    whole_batch_loss,
)
from test_worker_loss import rows as rows  # noqa: F401  (fixture)
from test_worker_loss import tokenizer as tokenizer  # noqa: F401  (fixture)

from recipe.atesd.method.controller import ControllerConfig, ExposureController, StepStats
from recipe.atesd.method.controller.exposure import EXPOSURE_MODES
from recipe.atesd.method.controller.reward import RETURN_TERMS
from recipe.atesd.method.losses import DistillLossConfig
from recipe.atesd.method.prompts import TEACHER_CONTEXTS, TeacherPromptConfig, chat_ids, student_prompt_ids
from recipe.atesd.method.teacher import TEACHER_KINDS, TeacherConfig, teacher_weights
from recipe.atesd.method.token_weights import TOKEN_WEIGHTINGS

DUMMY_MODULE = '''
"""A user's extension file: one dummy entry per registry."""
from recipe.atesd.method.controller.exposure import register_exposure_mode, unlearned
from recipe.atesd.method.controller.reward import register_return_term
from recipe.atesd.method.prompts import TeacherPrompt, Revealed, chat_ids, register_teacher_context
from recipe.atesd.method.teacher import register_teacher_kind
from recipe.atesd.method.token_weights import register_weighting

CALLS = []

@register_exposure_mode("dummy_mode", keys=("alpha",))
def dummy_mode(w):
    """α_k = alpha · (k + 1)/K: a different α per bucket, from the config and the bucket count."""
    return unlearned([w.cfg.alpha * (k + 1) / w.buckets for k in range(w.buckets)])

@register_return_term("dummy_term", signals=("distill_loss", "mismatch"))
def dummy_term(trajectory, gamma):
    """Σ over the window of (distill_loss − mismatch)."""
    return sum(a - b for a, b in zip(trajectory["distill_loss"], trajectory["mismatch"]))

register_teacher_kind(
    "dummy_kind",
    place=lambda lora: "actor",
    moves=True,
    after_update=lambda teacher, student, cfg: CALLS.append((len(list(teacher)), len(list(student)), cfg.kind)),
)

@register_teacher_context("dummy_context", needs=("problem", "answer"), uses_alpha=False)
def dummy_context(tokenizer, row, alpha, cfg, max_len):
    """The problem and the answer only, whatever α is."""
    text = row["problem"] + " The answer is " + row["answer"] + "."
    ids = chat_ids(tokenizer, [{"role": "user", "content": text}], enable_thinking=True)
    return TeacherPrompt(ids, Revealed("", row["reference_solution"], 0, 1), 0)

@register_weighting("dummy_weighting")
def dummy_weighting(mask, lengths, cfg):
    """Only the last valid token of each response counts (weight 2)."""
    import torch
    out, start = torch.zeros(mask.numel(), dtype=torch.float64), 0
    for n in lengths.tolist():
        valid = mask[start : start + n].nonzero()
        if len(valid):
            out[start + int(valid[-1])] = 2.0
        start += n
    return out
'''

REGISTRIES = (EXPOSURE_MODES, RETURN_TERMS, TEACHER_KINDS, TEACHER_CONTEXTS, TOKEN_WEIGHTINGS)


@pytest.fixture
def dummy(tmp_path):
    """Import the dummy module from a temporary file; the registries are restored afterwards."""
    saved = [dict(r) for r in REGISTRIES]
    path = tmp_path / "my_extension.py"
    path.write_text(textwrap.dedent(DUMMY_MODULE))
    spec = importlib.util.spec_from_file_location("my_extension", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    for registry, before in zip(REGISTRIES, saved, strict=True):
        registry.clear()
        registry.update(before)


def test_dummy_mode_and_return_term_run_through_the_controller(dummy):
    cfg = ControllerConfig(
        exposure_mode="dummy_mode",
        alpha=0.6,
        granularity="per_difficulty",
        num_buckets=3,
        hold_window=2,
        lookahead=2,
        reward_norm="none",
        reward_weights={"lp": 1.0, "dummy_term": 0.5},
    ).validate()
    ctrl = ExposureController(cfg, total_steps=6, seed=0)
    ctrl.observe_baseline(3.0)
    nll = [3.0, 2.5, 2.25]
    first = ctrl.decide(0)
    assert first.bucket_alphas == pytest.approx((0.2, 0.4, 0.6)) and first.alpha == pytest.approx(0.4)
    ctrl.observe(
        0,
        StepStats(distill_loss=1.0, mismatch=0.25, probe_nll=nll[1], teacher_ground=0.0, self_confidence=0.0),
    )
    ctrl.decide(1)
    metrics = ctrl.observe(
        1,
        StepStats(distill_loss=2.0, mismatch=0.5, probe_nll=nll[2], teacher_ground=0.0, self_confidence=0.0),
    )
    # window 0 completes after L = 2 updates: G_lp = 0.5 + 0.9·0.25, G_dummy = (1 − 0.25) + (2 − 0.5)
    lp, term = 0.5 + 0.9 * 0.25, 0.75 + 1.5
    assert metrics["controller/return_lp"] == pytest.approx(lp, abs=1e-12)
    assert metrics["controller/return_dummy_term"] == pytest.approx(term, abs=1e-12)
    assert metrics["controller/reward"] == pytest.approx(lp + 0.5 * term, abs=1e-12)
    assert "controller/return_gt" not in metrics  # only the configured terms are computed
    assert not math.isnan(ctrl.decide(2).alpha)  # the next window opens with the same mode


def test_config_names_unknown_entries():
    with pytest.raises(ValueError, match=r"controller.exposure_mode = 'dummy_mode'"):
        ControllerConfig(exposure_mode="dummy_mode").validate()
    with pytest.raises(
        ValueError, match=r"controller.reward_weights = 'dummy_term' .*registered return term"
    ):
        ControllerConfig(reward_weights={"lp": 1.0, "dummy_term": 1.0}).validate()
    with pytest.raises(ValueError, match=r"teacher.kind must be one of .* got 'dummy_kind'"):
        TeacherConfig(kind="dummy_kind").validate()
    with pytest.raises(ValueError, match=r"teacher_prompt.teacher_context='dummy_context' unknown"):
        TeacherPromptConfig(teacher_context="dummy_context")


def test_dummy_context_is_what_the_worker_scores_with(dummy, tokenizer, rows):
    """The worker's loss under the dummy context equals the dense loss against the dummy's own c_T (built here
    from the problem and answer, not through the registry), and differs from the privileged context's."""
    exposure = TeacherPromptConfig(segmenter="sentences", teacher_context="dummy_context")
    vocab = len(tokenizer)
    student, teacher = tiny_qwen(vocab, 1), tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=3)

    def worker_loss(prompt_cfg):
        return whole_batch_loss(tokenizer, student, teacher, prompt_cfg, rows, responses)[0].item()

    triples = []
    for info, resp in zip(rows, responses, strict=True):
        text = info["problem"] + " The answer is " + info["answer"] + "."
        tp = chat_ids(tokenizer, [{"role": "user", "content": text}], enable_thinking=True)
        triples.append((student_prompt_ids(tokenizer, info["problem"], exposure), tp, resp))
    dense = dense_loss(student, teacher, triples).item()
    assert worker_loss(exposure) == pytest.approx(dense, abs=1e-9)  # fp64 models
    privileged = worker_loss(TeacherPromptConfig(segmenter="sentences"))
    assert abs(privileged - dense) > 1e-6  # the control: another context gives another loss


def test_dummy_weighting_is_what_the_worker_weighs_with(dummy, tokenizer, rows):
    """The worker's loss under the dummy weighting equals the dense loss with each response's last token at weight 2
    and the others at 0, and differs from the unweighted loss."""
    exposure = TeacherPromptConfig(segmenter="sentences")
    vocab = len(tokenizer)
    student, teacher = tiny_qwen(vocab, 1), tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=4)

    def worker_loss(weighting):
        return whole_batch_loss(
            tokenizer, student, teacher, exposure, rows, responses, token_weighting=weighting
        )[0].item()

    dense = dense_reference(
        student, teacher, tokenizer, exposure, rows, responses, alpha=0.5, weight=lambda i, n: 2.0 * (i == n)
    ).item()
    assert worker_loss("dummy_weighting") == pytest.approx(dense, abs=1e-9)  # fp64 models
    assert abs(worker_loss("none") - dense) > 1e-6  # the control: no weighting gives another loss
    with pytest.raises(ValueError, match="distill.token_weighting"):
        DistillLossConfig(token_weighting="missing").validate()


def test_dummy_teacher_kind_runs_after_each_update(dummy, monkeypatch):
    """The worker places the dummy kind's weights where it says and calls its after-update hook with the
    teacher's and the student's parameters (verl's own update replaced by a stub: no engine in-process)."""
    from types import SimpleNamespace

    from verl.workers.engine_workers import ActorRolloutRefWorker

    from recipe.atesd.glue.worker import ATESDWorker
    from recipe.atesd.method.teacher import teacher_kind

    assert teacher_weights("dummy_kind", lora=False) == "actor" == teacher_weights("dummy_kind", lora=True)
    monkeypatch.setattr(ActorRolloutRefWorker, "update_actor", lambda self, data: {"metrics": {}})
    module = torch.nn.Linear(3, 2)
    w = ATESDWorker.__new__(ATESDWorker)
    w._teacher_cfg = TeacherConfig(kind="dummy_kind").validate()
    w._kind = teacher_kind("dummy_kind")
    w._weights = teacher_weights("dummy_kind", lora=False)
    w._distill_cfg = SimpleNamespace(fused=False)
    w._exposure = None
    w.actor = SimpleNamespace(engine=SimpleNamespace(module=module))
    data = SimpleNamespace()
    monkeypatch.setattr("recipe.atesd.glue.worker.tu.assign_non_tensor", lambda td, **kw: None)
    ATESDWorker.update_actor(w, data)
    ATESDWorker.update_actor(w, data)
    assert (
        dummy.CALLS == [(2, 2, "dummy_kind")] * 2
    )  # once per update: the actor's weight and bias, both roles
