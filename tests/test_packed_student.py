"""The packed (``use_remove_padding=true``, the GPU presets) student path equals the padded one (CPU runs).

verl's ``FSDPEngineWithLMHead.forward_step`` runs with the seam of ``verl_patches/student_output_loss.py``:
``prepare_model_inputs`` (verl's) packs the micro-batch into one ``(1, nnz)`` row with per-sequence
``position_ids`` and no attention mask (packed) or right-pads it with an attention mask (padded); the seam hands
the worker's loss (``StudentOutputLoss``) the ``[nnz, V]`` student logits in both cases, which it aligns with
the teacher's left-padded rows (``recipe/atesd/method/scoring.py``). On CPU the packed batch runs under SDPA because
transformers 5 detects packing from ``position_ids`` when no mask is given (``masking_utils.
find_packed_sequence_indices``); on GPU the same input goes to flash-attn varlen, which CPU cannot run.

Checked per response token of every row, against a dense reference that scores each sequence alone: the
forward KL(p_T ‖ p_S) per token (the worker's ``distill/kl_*`` diagnostics), the micro-batch loss and the
gradient. Rows differ in prompt length, response length (1 to 11) and teacher-prompt length, so
the padded student rows (right) and the teacher rows (left) both carry padding. Controls show the bound
sees a cross-sequence attention leak and a one-row shift of the alignment.
"""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_qwen
from test_worker_loss import FP64_ZERO, TEMPERATURE, make_worker, micro_batch
from transformers import AutoTokenizer

from recipe.atesd.data.tiny_model import tokenizer_dir
from recipe.atesd.method.prompts import TeacherPromptConfig, teacher_prompt_ids

ALPHA = 0.5
# Deliberately unequal, including a one-token response (its only logit row is the prompt's last token).
RESPONSE_LENGTHS = (5, 1, 11, 3)
EXPOSURE = TeacherPromptConfig(segmenter="sentences")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_dir())


@pytest.fixture(scope="module")
def rows():
    frame = pd.read_parquet(REPO_ROOT / "data/tiny/train.parquet").head(len(RESPONSE_LENGTHS))
    return [dict(info) for info in frame["extra_info"]]


@pytest.fixture(scope="module")
def responses(tokenizer):
    gen = torch.Generator().manual_seed(13)
    return [torch.randint(0, len(tokenizer), (n,), generator=gen).tolist() for n in RESPONSE_LENGTHS]


def engine_for(student, monkeypatch):
    """verl's FSDP LM-head engine around a plain module: the attributes ``forward_step`` reads on one rank
    without Ulysses or static padding; fp32 ``_autocast_dtype`` switches autocast off, as verl does."""
    from verl.workers.engine.fsdp import transformer_impl

    monkeypatch.setattr(transformer_impl, "get_device_id", lambda: "cpu")
    monkeypatch.setattr(transformer_impl, "get_device_name", lambda: "cpu")
    engine = transformer_impl.FSDPEngineWithLMHead.__new__(transformer_impl.FSDPEngineWithLMHead)
    engine.module = student
    engine.pad_to_length = False
    engine.use_ulysses_sp = False
    engine.ulysses_device_mesh = None
    engine._autocast_dtype = torch.float32
    engine.engine_config = SimpleNamespace(
        entropy_checkpointing=False, entropy_from_logits_with_chunking=False
    )
    return engine


def student_pass(tokenizer, rows, responses, monkeypatch, *, packed: bool, contiguous_positions=False):
    """One micro-batch through ``forward_step`` + backward; the per-token KL (response tokens in row order),
    the loss and the flat gradient. ``contiguous_positions`` numbers the whole pack 0..nnz-1 (control)."""
    from verl.utils import tensordict_utils as tu

    from recipe.atesd.glue.worker import StudentOutputLoss

    student = tiny_qwen(len(tokenizer), 1)
    worker = make_worker(tokenizer, tiny_qwen(len(tokenizer), 2), EXPOSURE, alpha=ALPHA)
    td, _ = micro_batch(tokenizer, EXPOSURE, rows, responses, sum(map(len, responses)))
    lengths = td["input_ids"].offsets().diff().tolist()
    positions = (
        [
            torch.arange(sum(lengths))[end - n : end]
            for n, end in zip(lengths, td["input_ids"].offsets()[1:], strict=True)
        ]
        if contiguous_positions
        else [torch.arange(n) for n in lengths]
    )
    td["position_ids"] = torch.nested.as_nested_tensor(positions, layout=torch.jagged)
    tu.assign_non_tensor(td, use_remove_padding=packed, pad_token_id=tokenizer.pad_token_id)
    engine = engine_for(student, monkeypatch)
    loss, output = engine.forward_step(td, StudentOutputLoss(worker), forward_only=False)
    loss.backward()
    assert list(output["model_output"]) == ["student_logits"]  # what the seam handed the loss, by name
    return {
        "token_kl": [torch.tensor(worker._report.token_kl, dtype=torch.float64)],
        "loss": loss.item(),
        "grad": torch.cat([p.grad.flatten() for p in student.parameters()]),
    }


def dense(tokenizer, rows, responses):
    """Each sequence alone, no padding: KL = Σ_v p_T(log p_T − log p_S) and the loss Σ_v min(p_T(log p_T −
    log p_S), τ) per token (docs/method.md §1, forward KL, τ = 0.05), logits divided by the sampling temperature
    as verl stores it (fp32: ``prepare_model_inputs``; the worker's teacher temperatures likewise)."""
    from recipe.atesd.method.prompts import student_prompt_ids

    student, teacher = tiny_qwen(len(tokenizer), 1), tiny_qwen(len(tokenizer), 2)
    temperature = torch.tensor(TEMPERATURE, dtype=torch.float32).double()
    token_kl, token_loss = [], []
    with torch.no_grad():
        for info, resp in zip(rows, responses, strict=True):
            sp = student_prompt_ids(tokenizer, info["problem"], EXPOSURE)
            tp = teacher_prompt_ids(
                tokenizer, info["problem"], info["reference_solution"], ALPHA, EXPOSURE, answer=info["answer"]
            ).ids
            s = student(input_ids=torch.tensor([sp + resp])).logits[0, len(sp) - 1 : -1] / temperature
            t = teacher(input_ids=torch.tensor([tp + resp])).logits[0, len(tp) - 1 : -1] / temperature
            log_s, log_t = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
            token_kl.append((log_t.exp() * (log_t - log_s)).sum(-1))
            token_loss.append(torch.clamp(log_t.exp() * (log_t - log_s), max=0.05).sum(-1))
    return {"token_kl": [torch.cat(token_kl)], "loss": float(torch.cat(token_loss).mean())}


def max_row_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [len(x) for x in a] == [len(x) for x in b], "response lengths differ"
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def reference(tokenizer, rows, responses):
    return dense(tokenizer, rows, responses)


def test_batch_pads_on_both_sides(tokenizer, rows, responses):
    """The case is non-trivial: student sequences and teacher sequences all differ in length."""
    from recipe.atesd.method.prompts import student_prompt_ids
    from recipe.atesd.method.scoring import build_teacher_batch

    student_lengths = {
        len(student_prompt_ids(tokenizer, r["problem"], EXPOSURE)) + len(y)
        for r, y in zip(rows, responses, strict=True)
    }
    teacher_prompts = [
        teacher_prompt_ids(
            tokenizer, r["problem"], r["reference_solution"], ALPHA, EXPOSURE, answer=r["answer"]
        ).ids
        for r in rows
    ]
    batch = build_teacher_batch(teacher_prompts, responses, tokenizer.pad_token_id)
    assert len(student_lengths) == len(rows)  # the padded path right-pads all but the longest
    assert int((batch.attention_mask[:, 0] == 0).sum()) == len(rows) - 1  # teacher: all but one left-padded


@pytest.fixture(scope="module")
def passes(tokenizer, rows, responses):
    with pytest.MonkeyPatch.context() as monkeypatch:
        return {
            layout: student_pass(tokenizer, rows, responses, monkeypatch, packed=layout == "packed")
            for layout in ("packed", "padded")
        }


# FP64_ZERO (tests/test_worker_loss.py: 1e-12, derived there from fp64 unit roundoff u ≈ 1.1e-16 and
# |log p| ≤ ln V ≈ 12, ~100× over the worst-case rounding) bounds every gap: the packed, the padded and the
# dense forwards compute the same fp64 sums in different shapes, so they agree to rounding only.
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_student_path_matches_dense_reference_per_token(passes, reference, layout):
    got = passes[layout]
    assert max_row_gap(got["token_kl"], reference["token_kl"]) <= FP64_ZERO
    assert got["loss"] == pytest.approx(reference["loss"], abs=FP64_ZERO)


def test_packed_and_padded_give_the_same_gradient(passes):
    packed, padded = passes["packed"]["grad"], passes["padded"]["grad"]
    assert padded.abs().max() > 1e3 * FP64_ZERO  # a gradient to compare
    assert float((packed - padded).abs().max()) <= FP64_ZERO


def test_bound_sees_a_cross_sequence_leak(tokenizer, rows, responses, reference, monkeypatch):
    """Control: numbered as one sequence, the pack attends across rows (what SDPA does without packing
    detection); the per-token KL then misses the reference by far more than the bound."""
    leaked = student_pass(tokenizer, rows, responses, monkeypatch, packed=True, contiguous_positions=True)
    assert max_row_gap(leaked["token_kl"], reference["token_kl"]) > 1e3 * FP64_ZERO


def test_bound_sees_a_one_row_shift(tokenizer, rows, responses, reference, monkeypatch):
    """Control: student rows one earlier than ``packed_response_rows`` says (an off-by-one in the
    alignment) pair each teacher row with the wrong student row; the per-token KL misses the reference."""
    from recipe.atesd.glue import worker
    from recipe.atesd.method.scoring import packed_response_rows

    monkeypatch.setattr(
        worker, "packed_response_rows", lambda cu, lengths: packed_response_rows(cu, lengths) - 1
    )
    shifted = student_pass(tokenizer, rows, responses, monkeypatch, packed=True)
    assert max_row_gap(shifted["token_kl"], reference["token_kl"]) > 1e3 * FP64_ZERO
