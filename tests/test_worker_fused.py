"""``distill.fused`` through the worker: the same loss and gradient as the logit path (the reference).

One micro-batch runs through verl's ``FSDPEngineWithLMHead.forward_step`` and the seam of
``verl_patches/student_output_loss.py`` (as in tests/test_packed_student.py) into the worker's loss
(``StudentOutputLoss``), then backward, once with ``distill.fused`` (the seam hands the loss the student's final
hidden states, the head weight is recorded inside ``StudentOutputLoss.student_forward``; the teacher returns
hidden states, ``scoring.teacher_response_hidden``; ``method/fused_loss.py`` projects chunk by chunk) and once
without (the [nnz, V] logits, ``losses.distill_token_losses``). Per token the forward KL is compared (the
worker's ``distill/kl_*`` diagnostics). Covered: packed and padded layouts, a separate teacher
(frozen full-FT reference: its head weight is copied) and a teacher that is the student's module (LoRA
adapters off / live: the head weight is shared), untied and tied embeddings, and the same under FSDP2
(``verl.utils.fsdp_utils.apply_fsdp2``, gloo, world size 1), where the separately wrapped LM head is
resharded after its forward — a control shows that its gathered weight really is freed there.
"""

import os
import socket
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_qwen
from test_packed_student import engine_for
from test_worker_loss import FP64_ZERO, make_worker, micro_batch
from transformers import AutoTokenizer

from recipe.atesd.data.tiny_model import tokenizer_dir
from recipe.atesd.method.prompts import TeacherPromptConfig

ALPHA = 0.5
RESPONSE_LENGTHS = (5, 1, 11, 3)
EXPOSURE = TeacherPromptConfig(segmenter="sentences")

# Fused vs logit path, fp64: both evaluate the same formula; the only difference is the order of the
# vocabulary projection's operations, (h/τ) Wᵀ chunk by chunk against (h Wᵀ)/τ in one product (and ∂W
# summed chunk by chunk against one product). Each logit then differs by a few ulp of |z| (≤ ~10 here:
# ~1e-15), which moves log p by the same and the per-token sum Σ_v p_T(log p_T − log p_S) by at most a
# few · ln V · u ≈ 1e-14, the gradient likewise: FP64_ZERO (1e-12, tests/test_worker_loss.py) leaves ~100×.
# Measured (this file, every case): per-token loss ≤ 3.2e-15, loss ≤ 1.6e-16, gradient ≤ 5.2e-18 (LoRA:
# bit-identical) — 300× under the bound. A real defect moves them by far more: the teacher projected
# with the student's head (the control below), a row off by one (tests/test_packed_student.py).
FUSED_VS_LOGITS = FP64_ZERO


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_dir())


@pytest.fixture(scope="module")
def rows():
    frame = pd.read_parquet(REPO_ROOT / "data/tiny/train.parquet").head(len(RESPONSE_LENGTHS))
    return [dict(info) for info in frame["extra_info"]]


@pytest.fixture(scope="module")
def responses(tokenizer):
    gen = torch.Generator().manual_seed(17)
    return [torch.randint(0, len(tokenizer), (n,), generator=gen).tolist() for n in RESPONSE_LENGTHS]


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def run(
    tokenizer,
    rows,
    responses,
    monkeypatch,
    *,
    fused,
    packed=True,
    shared=False,
    tied=False,
    lora=False,
    wrap=None,
    part=None,
    dp_size=1,
    dtype=torch.float64,
    token_weighting="none",
):
    """One micro-batch: forward_step + backward through the seam; per-token KL, loss, gradient."""
    from verl.utils import tensordict_utils as tu

    from recipe.atesd.glue.worker import StudentOutputLoss

    vocab = len(tokenizer)
    student = tiny_qwen(vocab, 1, tied=tied).to(dtype)
    if lora:  # the papers' setting: LoRA on the layers' projections (random B: adapters change the model)
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(3)
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        student = get_peft_model(student, config).to(dtype)
    teacher = student if shared else tiny_qwen(vocab, 2, tied=tied).to(dtype)
    if wrap is not None:  # the separate teacher too: verl's fused reference is an FSDP2 module as well
        wrap(student)
        if not shared:
            wrap(teacher)
    worker = make_worker(
        tokenizer, teacher, EXPOSURE, alpha=ALPHA, fused=fused, token_weighting=token_weighting
    )
    worker.actor = SimpleNamespace(engine=SimpleNamespace(module=student))
    if lora:  # frozen LoRA teacher: the actor with its adapters disabled, the head shared
        worker._weights = "adapters_off"
        worker.actor.engine.disable_adapter = student.disable_adapter
    elif shared:
        worker._weights = "actor"  # the live teacher: the student's own module
    batch_tokens = sum(map(len, responses))  # the whole batch's, also when this rank scores a part
    if part is not None:
        rows, responses = [rows[i] for i in part], [responses[i] for i in part]
    td, _ = micro_batch(tokenizer, EXPOSURE, rows, responses, batch_tokens)
    td["position_ids"] = torch.nested.as_nested_tensor(
        [torch.arange(n) for n in td["input_ids"].offsets().diff().tolist()], layout=torch.jagged
    )
    tu.assign_non_tensor(  # the loss is Σ / batch tokens × dp_size: FSDP averages over ranks
        td, use_remove_padding=packed, pad_token_id=tokenizer.pad_token_id, dp_size=dp_size
    )
    from recipe.atesd.glue import worker as worker_module

    calls = []
    for name in ("fused_distill_loss", "distill_token_losses"):
        real = getattr(worker_module, name)
        monkeypatch.setattr(
            worker_module, name, lambda *a, _n=name, _f=real, **k: calls.append(_n) or _f(*a, **k)
        )
    engine = engine_for(student, monkeypatch)
    loss, output = engine.forward_step(td, StudentOutputLoss(worker), forward_only=False)
    loss.backward()
    assert calls == ["fused_distill_loss" if fused else "distill_token_losses"]
    assert list(output["model_output"]) == ["student_hidden" if fused else "student_logits"]
    return {
        "token_kl": torch.tensor(worker._report.token_kl, dtype=torch.float64),
        "loss": loss.item(),
        "grad": torch.cat([full(p.grad).flatten() for p in student.parameters() if p.requires_grad]),
        "report": worker._report,
    }


def gaps(fused, logits) -> dict:
    return {
        "token_kl": float((fused["token_kl"] - logits["token_kl"]).abs().max()),
        "loss": abs(fused["loss"] - logits["loss"]),
        "grad": float((fused["grad"] - logits["grad"]).abs().max()),
    }


def assert_same(fused, logits):
    assert fused["token_kl"].abs().max() > 1e3 * FUSED_VS_LOGITS  # KLs to compare
    assert float((fused["token_kl"] - logits["token_kl"]).abs().max()) <= FUSED_VS_LOGITS
    assert fused["loss"] == pytest.approx(logits["loss"], abs=FUSED_VS_LOGITS)
    assert logits["grad"].abs().max() > 1e3 * FUSED_VS_LOGITS
    assert float((fused["grad"] - logits["grad"]).abs().max()) <= FUSED_VS_LOGITS
    for key in ("loss_sum", "weight_sum", "n_tokens", "agree_sum", "entropy_sum"):
        assert getattr(fused["report"], key) == pytest.approx(getattr(logits["report"], key), abs=1e-9), key


CASES = {
    "packed": {},
    "padded": {"packed": False},
    "shared-head teacher": {"shared": True},
    "tied": {"tied": True},
    "tied, shared-head teacher": {"tied": True, "shared": True},
    "LoRA student, adapters-off teacher": {"lora": True, "shared": True},
    "position-weighted (PW-OPSD)": {"token_weighting": "position"},  # float w_n through the fused kernel
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fused_worker_path_matches_logit_path(tokenizer, rows, responses, monkeypatch, case):
    fused, logits = (
        run(tokenizer, rows, responses, monkeypatch, fused=f, **CASES[case]) for f in (True, False)
    )
    print(case, gaps(fused, logits))
    assert_same(fused, logits)


# bf16 (the GPU presets' dtype; here on CPU, autocast off, model and head in bf16): both paths round the
# logits to bf16 (u = 2^-8 ≈ 3.9e-3 relative), the logit path as hWᵀ then /τ, the fused one as (h/τ)Wᵀ,
# so a logit moves by up to ~u·|z| ≈ 4e-3 for |z| ~ 1 and a token's Σ_v p_T(log p_T − log p_S) by at
# most about that: BF16_TOKEN = 1e-3 (measured 2.1e-5; the per-token loss here is ~1e-2). The parameter
# gradients run through the bf16 backward of the whole model: measured max gap 2.4 % of max |grad|,
# bound 10 % — a dropped or doubled head gradient or a wrong scale moves them by ~100 %.
BF16_TOKEN, BF16_GRAD_SHARE = 1e-3, 0.1


def test_bf16_fused_worker_path_matches_logit_path(tokenizer, rows, responses, monkeypatch):
    fused, logits = (
        run(tokenizer, rows, responses, monkeypatch, fused=f, dtype=torch.bfloat16) for f in (True, False)
    )
    assert fused["grad"].dtype == torch.bfloat16
    assert float((fused["token_kl"] - logits["token_kl"]).abs().max()) <= BF16_TOKEN
    scale = float(logits["grad"].float().abs().max())
    assert scale > 0
    assert float((fused["grad"].float() - logits["grad"].float()).abs().max()) <= BF16_GRAD_SHARE * scale


def test_bound_sees_the_teacher_scored_with_the_students_head(tokenizer, rows, responses, monkeypatch):
    """Control: a separate teacher whose hidden states are projected with the *student's* head (the
    defect a wrong shared-head decision would make) misses the logit path by far more than the bound."""
    from recipe.atesd.glue import worker as worker_module

    real = worker_module.teacher_response_hidden

    def students_head(model, batch, device, shared=None, weight=None, copied=None):
        return real(model, batch, device)[0], weight.detach()

    logits = run(tokenizer, rows, responses, monkeypatch, fused=False)
    monkeypatch.setattr(worker_module, "teacher_response_hidden", students_head)
    wrong = run(tokenizer, rows, responses, monkeypatch, fused=True)
    assert gaps(wrong, logits)["token_kl"] > 1e3 * FUSED_VS_LOGITS
    assert gaps(wrong, logits)["grad"] > 1e3 * FUSED_VS_LOGITS


def test_head_is_restored_after_the_update(tokenizer, monkeypatch, rows, responses):
    """``student_forward`` swaps the head only around the student forward: afterwards the model gives logits."""
    from recipe.atesd.glue.worker import StudentOutputLoss

    student = tiny_qwen(len(tokenizer), 1)
    worker = make_worker(tokenizer, student, EXPOSURE, alpha=ALPHA, fused=True)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad(), StudentOutputLoss(worker).student_forward(student):
        assert student(input_ids=ids).logits.shape[-1] == student.config.hidden_size
    with torch.no_grad():
        assert student(input_ids=ids).logits.shape[-1] == len(tokenizer)


# ----------------------------------------------------------------- FSDP2 (gloo, one process)


def fsdp2(mesh):
    from verl.utils.fsdp_utils import apply_fsdp2

    return lambda model: apply_fsdp2(model, {"mesh": mesh, "reshard_after_forward": True}, {})


def test_fsdp2_frees_the_gathered_head_weight_after_forward(gloo):
    """Control: with untied embeddings verl wraps lm_head as its own FSDP2 unit, and the weight the
    head's forward sees is freed right after it — using it later (instead of the copy) would read
    freed storage. The copy taken inside the forward keeps its values."""
    from recipe.atesd.method.scoring import hidden_states_as_logits

    model = tiny_qwen(300, 1)
    fsdp2(gloo)(model)
    seen = []
    original = type(model.lm_head).forward

    def spy(self, hidden):
        seen.append(self.weight)
        return original(self, hidden)

    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(model.lm_head), "forward", spy)
        model(input_ids=ids)
    assert seen and not isinstance(seen[0], type(model.lm_head.weight))  # the gathered, plain tensor
    assert seen[0].untyped_storage().size() == 0  # freed after the forward
    with hidden_states_as_logits(model) as capture:
        model(input_ids=ids)
        copy = capture.pop()
    assert copy.untyped_storage().size() > 0
    torch.testing.assert_close(copy, model.lm_head.weight.full_tensor(), atol=0, rtol=0)


FSDP2_CASES = {
    "untied (lm_head its own unit)": {},
    "tied (head in the root unit)": {"tied": True},
    "shared-head teacher": {"shared": True},
}


@pytest.mark.parametrize("case", list(FSDP2_CASES), ids=list(FSDP2_CASES))
def test_fsdp2_fused_worker_path_matches_logit_path(tokenizer, rows, responses, monkeypatch, gloo, case):
    fused, logits = (
        run(tokenizer, rows, responses, monkeypatch, fused=f, wrap=fsdp2(gloo), **FSDP2_CASES[case])
        for f in (True, False)
    )
    print(case, gaps(fused, logits))
    assert_same(fused, logits)
    plain = run(tokenizer, rows, responses, monkeypatch, fused=False, **FSDP2_CASES[case])
    assert float((logits["grad"] - plain["grad"]).abs().max()) <= FUSED_VS_LOGITS  # FSDP2 changes nothing


def _two_rank_main(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks: each scores half of the batch (dp_size 2), fused and logit paths."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        tok = AutoTokenizer.from_pretrained(tokenizer_dir())
        infos = [
            dict(i) for i in pd.read_parquet(REPO_ROOT / "data/tiny/train.parquet").head(4)["extra_info"]
        ]
        gen = torch.Generator().manual_seed(17)
        resp = [torch.randint(0, len(tok), (n,), generator=gen).tolist() for n in RESPONSE_LENGTHS]
        part = [0, 1] if rank == 0 else [2, 3]
        got = {}
        for tied in (False, True):
            for fused in (True, False):
                with pytest.MonkeyPatch.context() as mp:
                    r = run(
                        tok, infos, resp, mp, fused=fused, tied=tied, wrap=fsdp2(mesh), part=part, dp_size=2
                    )
                got[(tied, fused)] = r["grad"]
        if rank == 0:
            torch.save(got, os.path.join(out_dir, "grads.pt"))
    finally:
        dist.destroy_process_group()


def test_fsdp2_two_ranks_fused_matches_single_process(tokenizer, rows, responses, monkeypatch, tmp_path):
    """FSDP2 with W really sharded (gloo, 2 ranks, each half of the batch, dp_size 2): the fused path's
    gradient — ∂W reduce-scattered across ranks — equals the one-process logit path on the whole batch,
    untied (lm_head its own unit) and tied."""
    import torch.multiprocessing as tmp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp.spawn(_two_rank_main, args=(port, str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "grads.pt")
    for tied in (False, True):
        whole = run(tokenizer, rows, responses, monkeypatch, fused=False, tied=tied)["grad"]
        for fused in (True, False):
            gap = float((got[(tied, fused)] - whole).abs().max())
            print(f"tied={tied} fused={fused}: two ranks vs one process {gap:.2e}")
            assert gap <= FUSED_VS_LOGITS, (tied, fused, gap)


def test_capture_hook_records_what_the_fused_kernel_scored(
    tokenizer, rows, responses, monkeypatch, gloo, tmp_path
):
    """tests/atesd_capture.py (the CPU stack's loss-parity hook) on the fused path, bf16 as in the stack
    (FSDP2's default bf16 params): the loss recomputed densely in fp64 from the recorded chunk logits
    equals the kernel's per-token loss within the e2e's TOKEN_LOSS_FP32_TOL (5e-5, fp32 buffers;
    measured 1.9e-6), and its batch reduction equals the micro-batch loss."""
    import atesd_capture

    from recipe.atesd.glue import worker as worker_module

    for name in ("distill_token_losses", "fused_distill_loss"):  # restored at teardown
        monkeypatch.setattr(worker_module, name, getattr(worker_module, name))
    monkeypatch.setattr(worker_module.ATESDWorker, "_token_losses", worker_module.ATESDWorker._token_losses)
    monkeypatch.setenv(atesd_capture.CAPTURE_DIR_VAR, str(tmp_path))
    atesd_capture._patch(worker_module)
    got = run(tokenizer, rows, responses, monkeypatch, fused=True, dtype=torch.bfloat16)
    (path,) = tmp_path.glob("rank0_mb*.pt")
    c = torch.load(path, weights_only=False)
    log_s = torch.log_softmax(c["student_logits"].double(), -1)
    log_t = torch.log_softmax(c["teacher_logits"].double(), -1)
    mask = c["response_mask"].double()
    dense = torch.clamp(log_t.exp() * (log_t - log_s), max=c["distill"].clip_tau).sum(-1) * mask
    assert float((dense - c["token_loss"].double() * mask).abs().max()) <= 5e-5
    assert dense.sum().item() / c["batch_num_tokens"] == pytest.approx(got["loss"], abs=1e-5)


def test_a_head_the_fused_path_cannot_replace_is_refused(tokenizer):
    """A biased head (or a LoRA-wrapped one, not an nn.Linear) is not h Wᵀ: refused, naming the key."""
    from recipe.atesd.method.scoring import hidden_states_as_logits

    model = tiny_qwen(len(tokenizer), 1)
    model.lm_head = torch.nn.Linear(model.config.hidden_size, len(tokenizer), bias=True).double()
    with pytest.raises(ValueError, match=r"distill.fused=false"), hidden_states_as_logits(model):
        pass
