"""Token-level distillation losses (recipe/atesd/method/losses.py) against naive dense references."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from recipe.atesd.method.losses import (
    LOSSES,
    DistillLossConfig,
    distill_token_losses,
)

MODES = ["forward_kl", "reverse_kl", "jsd", "topk_tail", "sampled_token"]
YAML_PATH = Path(__file__).resolve().parents[1] / "recipe" / "atesd" / "config" / "distill" / "default.yaml"


# ---------------------------------------------------------------- naive dense references (autograd)
def _dense_loss(s, t, cfg, target_ids=None, temperature=1.0):
    """Straightforward full-[T, V] autograd implementation of every mode (method.md §1)."""
    lps = torch.log_softmax(s / temperature, -1)
    lpt = torch.log_softmax(t.detach() / temperature, -1)
    ps, pt = lps.exp(), lpt.exp()
    mode, beta, tau = cfg.mode, cfg.jsd_beta, cfg.clip_tau
    if mode == "jsd" and beta in (0.0, 1.0):
        mode, tau = ("forward_kl" if beta == 0.0 else "reverse_kl"), None
    if mode == "forward_kl":
        terms = pt * (lpt - lps)
        return (terms if tau is None else terms.clamp(max=tau)).sum(-1)
    if mode == "reverse_kl":
        return (ps * (lps - lpt)).sum(-1)
    if mode == "jsd":
        log_m = torch.logsumexp(torch.stack([lpt + math.log(beta), lps + math.log(1 - beta)]), 0)
        return beta * (pt * (lpt - log_m)).sum(-1) + (1 - beta) * (ps * (lps - log_m)).sum(-1)
    if mode == "topk_tail":
        idx = lpt.topk(cfg.topk, -1).indices
        qt, qs = pt.gather(-1, idx), ps.gather(-1, idx)
        qt = torch.cat([qt, 1 - qt.sum(-1, keepdim=True)], -1)
        qs = torch.cat([qs, 1 - qs.sum(-1, keepdim=True)], -1)
        terms = qt * (qt.log() - qs.log())
        return (terms if tau is None else terms.clamp(max=tau)).sum(-1)
    if mode == "sampled_token":
        lps_y = lps.gather(-1, target_ids[:, None]).squeeze(-1)
        adv = (lpt.gather(-1, target_ids[:, None]).squeeze(-1) - lps_y).detach()
        return -adv * lps_y
    raise AssertionError(mode)


def _logits(n_tok=13, vocab=37, dtype=torch.float64, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n_tok, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(n_tok, vocab, generator=g, dtype=torch.float64) * scale).to(dtype)
    tgt = torch.randint(0, vocab, (n_tok,), generator=g)
    return s, t, tgt


def _run(s, t, cfg, tgt, weights=None, temperature=1.0):
    """(loss, student grad of Σ w·loss) from the chunked implementation."""
    s = s.detach().clone().requires_grad_(True)
    loss, diag = distill_token_losses(s, t, cfg, target_ids=tgt, temperature=temperature)
    w = torch.ones_like(loss) if weights is None else weights
    (loss * w).sum().backward()
    return loss.detach(), s.grad, diag


def _run_dense(s, t, cfg, tgt, weights=None, temperature=1.0):
    s = s.detach().clone().requires_grad_(True)
    loss = _dense_loss(s, t, cfg, tgt, temperature)
    w = torch.ones_like(loss) if weights is None else weights
    (loss * w).sum().backward()
    return loss.detach(), s.grad


CASES = [
    dict(mode="forward_kl", clip_tau=None),
    dict(mode="forward_kl", clip_tau=0.05),
    dict(mode="reverse_kl"),
    dict(mode="jsd", jsd_beta=0.5),
    dict(mode="jsd", jsd_beta=0.1),
    dict(mode="jsd", jsd_beta=0.0),
    dict(mode="jsd", jsd_beta=1.0),
    dict(mode="topk_tail", topk=5, clip_tau=None),
    dict(mode="topk_tail", topk=5, clip_tau=0.05),
    dict(mode="sampled_token"),
]


def case_id(case: dict) -> str:
    """Readable id of a ``CASES`` entry, e.g. ``mode=jsd-jsd_beta=0.5`` (pytest ids, gpu_check rows)."""
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_dense_reference_fp64(case, temperature):
    s, t, tgt = _logits()
    cfg = DistillLossConfig(chunk_size=4, **case)
    weights = torch.rand(s.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss, grad, _ = _run(s, t, cfg, tgt, weights, temperature)
    ref_loss, ref_grad = _run_dense(s, t, cfg, tgt, weights, temperature)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)
    assert grad.abs().max() > 1e-3  # a non-trivial gradient was compared


def masked_token_sum(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{mask} x, number of valid tokens), as the worker reduces a micro-batch."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype)).sum(), mask.sum().to(x.dtype)


def masked_token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    total, count = masked_token_sum(x, mask)
    return total / count.clamp(min=1)


def test_every_registered_mode_is_tested():
    assert set(LOSSES) == set(MODES)


def test_registry_entries_declare_config_fields_and_inputs(monkeypatch):
    """Each entry names only real DistillLossConfig fields; a declared input is enforced for any mode."""
    from recipe.atesd.method.losses import LossEntry, register_loss

    fields = {f.name for f in dataclasses.fields(DistillLossConfig)}
    for name, entry in LOSSES.items():
        assert set(entry.params) <= fields, name
    assert [m for m, e in LOSSES.items() if e.needs_target_ids] == ["sampled_token"]
    probe = LossEntry(LOSSES["forward_kl"].kernel, needs_target_ids=True)
    monkeypatch.setitem(LOSSES, "needs_ids_probe", probe)  # removed after the test
    s, t, _ = _logits()
    with pytest.raises(ValueError, match="'needs_ids_probe' needs target_ids"):
        distill_token_losses(s, t, DistillLossConfig(mode="needs_ids_probe"))
    with pytest.raises(ValueError, match="already registered"):
        register_loss("forward_kl")(LOSSES["forward_kl"].kernel)


def test_jsd_endpoints_equal_kl_and_interior_is_trl_convention():
    s, t, tgt = _logits()
    fwd, g_fwd, _ = _run(s, t, DistillLossConfig(mode="forward_kl", clip_tau=None), tgt)
    rev, g_rev, _ = _run(s, t, DistillLossConfig(mode="reverse_kl"), tgt)
    j0, g0, _ = _run(s, t, DistillLossConfig(mode="jsd", jsd_beta=0.0), tgt)
    j1, g1, _ = _run(s, t, DistillLossConfig(mode="jsd", jsd_beta=1.0), tgt)
    assert torch.equal(j0, fwd) and torch.equal(g0, g_fwd)
    assert torch.equal(j1, rev) and torch.equal(g1, g_rev)
    # Near the endpoints JSD_β ≈ β·KL_fwd and (1−β)·KL_rev (the documented discontinuity).
    small, _, _ = _run(s, t, DistillLossConfig(mode="jsd", jsd_beta=1e-8), tgt)
    large, _, _ = _run(s, t, DistillLossConfig(mode="jsd", jsd_beta=1 - 1e-8), tgt)
    torch.testing.assert_close(small / 1e-8, fwd, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(large / (1 - (1 - 1e-8)), rev, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_identical_logits_give_exactly_zero_loss_and_grad(case, dtype):
    s, _, tgt = _logits(n_tok=9, vocab=1000, dtype=dtype)
    cfg = DistillLossConfig(chunk_size=4, **case)
    loss, grad, diag = _run(s, s.clone(), cfg, tgt, temperature=1.1)
    assert torch.count_nonzero(loss) == 0
    assert torch.count_nonzero(grad) == 0
    assert torch.count_nonzero(diag["token_kl"]) == 0
    assert bool(diag["top1_agree"].eq(1).all())


@pytest.mark.parametrize("mode", MODES)
def test_no_gradient_reaches_the_teacher(mode):
    s, t, tgt = _logits(dtype=torch.float32)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss, diag = distill_token_losses(s, t, DistillLossConfig(mode=mode, topk=5), target_ids=tgt)
    assert loss.requires_grad and not any(d.requires_grad for d in diag.values())
    loss.sum().backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
def test_masked_positions_affect_neither_loss_nor_grad(mode):
    s, t, tgt = _logits()
    mask = torch.ones(s.shape[0], dtype=torch.bool)
    mask[[0, 5, 6, 12]] = False
    s2, t2, tgt2 = s.clone(), t.clone(), tgt.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), s.shape[1], dtype=s.dtype) * 10
    t2[~mask] = torch.randn(int((~mask).sum()), s.shape[1], dtype=s.dtype) * 10
    tgt2[~mask] = (tgt[~mask] + 1) % s.shape[1]
    grads, means = [], []
    for a, b, y in ((s, t, tgt), (s2, t2, tgt2)):
        a = a.clone().requires_grad_(True)
        loss, _ = distill_token_losses(a, b, DistillLossConfig(mode=mode, topk=5, chunk_size=3), target_ids=y)
        mean = masked_token_mean(loss, mask)
        mean.backward()
        grads.append(a.grad)
        means.append(mean.detach())
    assert torch.equal(means[0], means[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.count_nonzero(grads[0][~mask]) == 0


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_chunking_does_not_change_results(case):
    s, t, tgt = _logits(dtype=torch.float32)
    n_tok = s.shape[0]
    ref_loss, ref_grad, ref_diag = _run(s, t, DistillLossConfig(chunk_size=n_tok, **case), tgt)
    for chunk in (1, 7, n_tok + 5):
        loss, grad, diag = _run(s, t, DistillLossConfig(chunk_size=chunk, **case), tgt)
        torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(grad, ref_grad, atol=1e-7, rtol=1e-6)
        for key, val in diag.items():
            torch.testing.assert_close(val, ref_diag[key], atol=1e-6, rtol=1e-6)


def test_clipping_is_per_entry_and_keeps_negative_entries():
    s, t, tgt = _logits(n_tok=6, vocab=50, scale=4.0)
    lps, lpt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    terms = lpt.exp() * (lpt - lps)
    tau = 0.05
    assert bool((terms > tau).any(-1).all()) and bool((terms < 0).any(-1).all())  # the case is informative
    loss, grad, diag = _run(s, t, DistillLossConfig(clip_tau=tau), tgt)
    per_entry = torch.minimum(terms, torch.tensor(tau, dtype=terms.dtype)).sum(-1)
    torch.testing.assert_close(loss, per_entry, atol=1e-12, rtol=0)
    torch.testing.assert_close(diag["token_kl"], terms.sum(-1), atol=1e-12, rtol=0)
    # neither the unclipped KL, nor a clip of the total, nor dropping negative entries
    assert (loss - terms.sum(-1)).abs().min() > 1e-3
    assert (loss - terms.sum(-1).clamp(max=tau)).abs().min() > 1e-3
    assert (loss - terms.clamp(min=0, max=tau).sum(-1)).abs().min() > 1e-3
    # clipped entries pass no gradient through log p_S: the gradient equals that of the kept entries
    kept = terms < tau
    s_var = s.clone().requires_grad_(True)
    lps_var = torch.log_softmax(s_var, -1)
    (lpt.exp() * (lpt - lps_var) * kept).sum().backward()
    torch.testing.assert_close(grad, s_var.grad, atol=1e-12, rtol=0)


def test_topk_tail_is_a_proper_kl_where_truncated_kl_goes_negative():
    # teacher and student agree on the top-k ranking but the student puts more mass on it:
    # the truncated sum Σ_top p_T log(p_T/p_S) is negative; the tail bucket restores KL >= 0.
    vocab, k = 40, 3
    t = torch.zeros(1, vocab, dtype=torch.float64)
    t[0, :k] = torch.tensor([3.0, 2.5, 2.0])
    s = t.clone()
    s[0, :k] += 1.5
    s[0, k:] += torch.linspace(-1.0, 1.0, vocab - k, dtype=torch.float64)  # student's tail shape differs
    lps, lpt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    truncated = (lpt.exp() * (lpt - lps))[0, :k].sum()
    assert truncated < 0
    loss, _, _ = _run(s, t, DistillLossConfig(mode="topk_tail", topk=k, clip_tau=None), None)
    assert loss.item() > 0
    full, full_grad, _ = _run(s, t, DistillLossConfig(mode="forward_kl", clip_tau=None), None)
    assert loss.item() < full.item()  # coarse-graining can only lower a KL
    whole, whole_grad, _ = _run(
        s, t, DistillLossConfig(mode="topk_tail", topk=vocab + 3, clip_tau=None), None
    )
    torch.testing.assert_close(whole, full, atol=1e-12, rtol=0)
    torch.testing.assert_close(whole_grad, full_grad, atol=1e-12, rtol=0)


def test_diagnostics():
    s, t, tgt = _logits()
    _, _, diag = _run(s, t, DistillLossConfig(mode="reverse_kl"), tgt, temperature=0.7)
    lps, lpt = torch.log_softmax(s / 0.7, -1), torch.log_softmax(t / 0.7, -1)
    torch.testing.assert_close(diag["token_kl"], (lpt.exp() * (lpt - lps)).sum(-1), atol=1e-10, rtol=0)
    torch.testing.assert_close(diag["student_entropy"], -(lps.exp() * lps).sum(-1), atol=1e-10, rtol=0)
    assert torch.equal(diag["top1_agree"], (s.argmax(-1) == t.argmax(-1)).to(diag["top1_agree"].dtype))


def test_bf16_inputs():
    s, t, tgt = _logits(n_tok=16, vocab=300, dtype=torch.bfloat16)
    for mode in MODES:
        cfg = DistillLossConfig(mode=mode, topk=8, chunk_size=5)
        loss, grad, diag = _run(s, t, cfg, tgt, temperature=1.1)
        ref_loss, ref_grad, _ = _run(s.double(), t.double(), cfg, tgt, temperature=1.1)
        assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
        assert diag["token_kl"].dtype == torch.float32
        torch.testing.assert_close(loss.double(), ref_loss, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(grad.double(), ref_grad, atol=2e-3, rtol=1e-2)


def test_leading_dims_and_micro_batch_token_mean():
    s, t, tgt = _logits(n_tok=12)
    mask = torch.rand(12, generator=torch.Generator().manual_seed(3)) > 0.3
    cfg = DistillLossConfig(chunk_size=5)
    s_full = s.clone().requires_grad_(True)
    loss, _ = distill_token_losses(s_full, t, cfg)
    masked_token_mean(loss, mask).backward()
    # [B, L, V] input == flattened [T, V]
    s3 = s.view(3, 4, -1).clone().requires_grad_(True)
    loss3, diag3 = distill_token_losses(s3, t.view(3, 4, -1), cfg)
    assert loss3.shape == (3, 4) and diag3["token_kl"].shape == (3, 4)
    torch.testing.assert_close(loss3.detach().reshape(-1), loss.detach(), atol=1e-12, rtol=0)
    # micro-batches: Σ sums / global count gives the same value and gradient as the whole-batch mean
    s_mb = s.clone().requires_grad_(True)
    n_valid = masked_token_sum(loss.detach(), mask)[1]
    total = 0.0
    for rows in (slice(0, 5), slice(5, 12)):
        part, _ = distill_token_losses(s_mb[rows], t[rows], cfg)
        part_sum, _ = masked_token_sum(part, mask[rows])
        (part_sum / n_valid).backward()
        total += part_sum.item()
    assert total / n_valid.item() == pytest.approx(masked_token_mean(loss, mask).item(), abs=1e-12)
    torch.testing.assert_close(s_mb.grad, s_full.grad, atol=1e-12, rtol=0)


def test_input_errors():
    s, t, tgt = _logits()
    with pytest.raises(ValueError, match="target_ids"):
        distill_token_losses(s, t, DistillLossConfig(mode="sampled_token"))
    with pytest.raises(ValueError, match="target_ids"):
        distill_token_losses(s, t, DistillLossConfig(mode="sampled_token"), target_ids=tgt + 100)
    with pytest.raises(ValueError, match="target_ids"):
        distill_token_losses(s, t, DistillLossConfig(mode="sampled_token"), target_ids=tgt[:3])
    with pytest.raises(ValueError, match="teacher_logits"):
        distill_token_losses(s, t[:, :5], DistillLossConfig())


def test_no_gradient_buffer_without_grad_mode(monkeypatch):
    seen = []
    kernel = LOSSES["forward_kl"].kernel

    def spy(ch, cfg, need_grad):
        seen.append(need_grad)
        return kernel(ch, cfg, need_grad)

    monkeypatch.setitem(LOSSES, "forward_kl", dataclasses.replace(LOSSES["forward_kl"], kernel=spy))
    s, t, _ = _logits()
    s.requires_grad_(True)
    with torch.no_grad():
        loss, _ = distill_token_losses(s, t, DistillLossConfig(chunk_size=20))
    assert seen == [False] and not loss.requires_grad
    loss, _ = distill_token_losses(s, t, DistillLossConfig(chunk_size=20))
    assert seen == [False, True] and loss.requires_grad


def test_second_backward_is_refused():
    s, t, _ = _logits()
    s.requires_grad_(True)
    loss, _ = distill_token_losses(s, t, DistillLossConfig())
    loss.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward"):
        loss.sum().backward()


@pytest.mark.parametrize(
    "key,value",
    [
        ("mode", "kl"),
        ("clip_tau", 0.0),
        ("clip_tau", -1.0),
        ("jsd_beta", 1.5),
        ("jsd_beta", -0.1),
        ("topk", 0),
        ("chunk_size", 0),
    ],
)
def test_config_validation_names_the_key(key, value):
    cfg = DistillLossConfig(**{key: value})
    with pytest.raises(ValueError, match=key):
        cfg.validate()
    s, t, _ = _logits()
    with pytest.raises(ValueError, match=key):
        distill_token_losses(s, t, cfg)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_must_be_positive(temperature):
    s, t, _ = _logits()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distill_token_losses(s, t, DistillLossConfig(), temperature=temperature)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_temperature_equals_logits_divided_by_it(case):
    """``temperature=τ`` on raw logits is the loss of logits already divided by τ with none (the worker's
    call, recipe/atesd/glue/worker.py), and its raw-logit gradient is the scaled logits' gradient ÷ τ."""
    s, t, tgt = _logits()
    cfg = DistillLossConfig(chunk_size=4, **case)
    loss, grad, diag = _run(s, t, cfg, tgt, temperature=0.7)
    scaled_loss, scaled_grad, scaled_diag = _run(s / 0.7, t / 0.7, cfg, tgt)
    torch.testing.assert_close(loss, scaled_loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, scaled_grad / 0.7, atol=1e-12, rtol=0)
    torch.testing.assert_close(diag["student_entropy"], scaled_diag["student_entropy"], atol=1e-12, rtol=0)
    assert not torch.allclose(loss, _run(s, t, cfg, tgt)[0])  # τ = 0.7 is not τ = 1


def test_yaml_mirrors_dataclass():
    with open(YAML_PATH) as fh:
        data = yaml.safe_load(fh)
    assert data == dataclasses.asdict(DistillLossConfig())
    assert DistillLossConfig(**data).validate() == DistillLossConfig()


def _large_allocations(fn, threshold):
    """Sizes of the individual CPU allocations >= threshold made by fn() (forward and backward)."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    return [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage >= threshold]


@pytest.mark.parametrize("mode", MODES)
def test_only_the_gradient_is_a_full_size_allocation(mode):
    n_tok, vocab, chunk = 64, 1000, 8
    s, t, tgt = _logits(n_tok=n_tok, vocab=vocab, dtype=torch.float32)
    s.requires_grad_(True)
    full = n_tok * vocab * 4
    cfg = DistillLossConfig(mode=mode, topk=5, chunk_size=chunk)

    def chunked():
        distill_token_losses(s, t, cfg, target_ids=tgt, temperature=1.1)[0].mean().backward()

    def dense():
        _dense_loss(s, t, cfg, tgt, 1.1).mean().backward()

    # every intermediate is per chunk (chunk/T = 1/8 of a full tensor); the one full-size buffer is the gradient
    assert _large_allocations(chunked, full // 4) == [full]
    assert len(_large_allocations(dense, full // 4)) > 3  # the probe does see full-size intermediates


@pytest.mark.parametrize(
    "case",
    [CASES[1], CASES[2], CASES[3], CASES[8], CASES[9]],
    ids=case_id,
)
def test_torch_compiled_chunk_equals_eager(case):
    """``use_torch_compile`` (CUDA in production) fuses the chunk kernel; compiled here on CPU it must
    give the eager values and gradient, and still an exactly-zero loss for identical logits."""
    from recipe.atesd.method.losses import _chunk_forward, _compiled_chunk_forward

    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(6, 50, generator=gen) * 3, torch.randn(6, 50, generator=gen) * 3
    tgt = torch.randint(0, 50, (6,), generator=gen)
    cfg = DistillLossConfig(**case)
    eager = _chunk_forward(s, t, tgt, cfg, 0.7, True, torch.float32)
    fused = _compiled_chunk_forward()(s, t, tgt, cfg, 0.7, True, torch.float32)
    for name, a, b in zip(("loss", "token_kl", "agree", "entropy", "grad"), eager, fused, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)
    same = _compiled_chunk_forward()(s, s.clone(), tgt, cfg, 0.7, True, torch.float32)
    assert same[0].abs().max().item() == 0.0
    assert same[4].abs().max().item() < 1e-6
