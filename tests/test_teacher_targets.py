"""The teacher's target from several views (recipe/atesd/method/teacher_targets.py; docs/method.md §2.7).

Every formula is checked against a dense fp64 reference written here entry by entry, and each check has a control
that a wrong view or a wrong constant fails. fp64 throughout: the combinations are a handful of log_softmax /
logsumexp passes over V ≤ 64 entries, whose rounding is a few ulp of |log q| ≤ ~10, i.e. ~1e-14; the bound 1e-10
leaves 10^4 headroom and stays far below every control's effect (≥ 1e-3, printed in the asserts).
"""

import math

import pytest
import torch
from test_worker_loss import rows as rows  # noqa: F401  (fixture)
from test_worker_loss import tokenizer as tokenizer  # noqa: F401  (fixture)

from recipe.atesd.method.fused_loss import fused_distill_loss
from recipe.atesd.method.losses import DistillLossConfig, distill_token_losses
from recipe.atesd.method.teacher_targets import (
    TEACHER_TARGETS,
    View,
    check_target,
    combined_target,
    register_target,
    uses_alpha,
    view_contexts,
)

TOL = 1e-10
V = 64


def logits(seed, rows=5, vocab=V, scale=3.0):
    return (
        torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    )


def anchor_residual_dense(z_p, z_f, lam, clip):
    """AR-OPD's target written entry by entry (python floats)."""
    out = []
    for row_p, row_f in zip(z_p.tolist(), z_f.tolist(), strict=True):
        lp = [x - math.log(sum(math.exp(y) for y in row_p)) for x in row_p]
        lf = [x - math.log(sum(math.exp(y) for y in row_f)) for x in row_f]
        mixed = [a + lam * min(max(b - a, -clip), clip) for a, b in zip(lp, lf, strict=True)]
        norm = math.log(sum(math.exp(m) for m in mixed))
        out.append([m - norm for m in mixed])
    return torch.tensor(out, dtype=torch.float64)


def avsd_dense(views, student, eps=1e-8):
    """AVSD's consensus-gated target written entry by entry (python floats), renormalised."""
    k = len(views)

    def log_softmax(row):
        norm = math.log(sum(math.exp(y) for y in row))
        return [x - norm for x in row]

    out = []
    for r in range(student.shape[0]):
        lq = [log_softmax(v[r].tolist()) for v in views]
        ls = log_softmax(student[r].tolist())
        mixed = []
        for j in range(student.shape[1]):
            vals = [lq[i][j] for i in range(k)]
            g = sum(vals) / k
            a = math.log(sum(math.exp(x) for x in vals) / k)
            gap = max(0.0, a - g)
            deltas = [x - ls[j] for x in vals]
            c = abs(sum(deltas) / k)
            spread = sum(abs(d) for d in deltas) / k
            gate = c / (spread + eps) * c / (c + gap + eps)
            mixed.append(g + gate * gap)
        out.append(log_softmax(mixed))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("lam,clip", [(0.8, 5.0), (1.2, 0.5), (0.6, 5.0)])
def test_anchor_residual_matches_its_formula(lam, clip):
    z_p, z_f, z_s = logits(1), logits(2), logits(3)
    cfg = DistillLossConfig(target="anchor_residual", residual_lambda=lam, residual_clip=clip)
    got, target_kl = combined_target("anchor_residual", [z_p, z_f], z_s, cfg, torch.float64)
    want = anchor_residual_dense(z_p, z_f, lam, clip)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    anchor = torch.log_softmax(z_p, -1)
    torch.testing.assert_close(target_kl, (want.exp() * (want - anchor)).sum(-1), atol=TOL, rtol=0)
    # controls: the views swapped, or the clamp forgotten (clip 0.5 binds on these logits)
    swapped = anchor_residual_dense(z_f, z_p, lam, clip)
    assert (got - swapped).abs().max() > 1e-3
    if clip < 1:
        assert (got - anchor_residual_dense(z_p, z_f, lam, 1e9)).abs().max() > 1e-3


def test_anchor_residual_limits_are_the_anchor_and_the_full_view():
    z_p, z_f = logits(4, scale=1.0), logits(5, scale=1.0)  # |log q_f − log q_p| < 5 everywhere: no clamp
    for lam, view in ((0.0, z_p), (1.0, z_f)):
        cfg = DistillLossConfig(target="anchor_residual", residual_lambda=lam)
        got, _ = combined_target("anchor_residual", [z_p, z_f], z_p, cfg, torch.float64)
        torch.testing.assert_close(got, torch.log_softmax(view, -1), atol=TOL, rtol=0)


def test_multi_view_matches_avsd_gate():
    views, z_s = [logits(10), logits(11), logits(12)], logits(13)
    cfg = DistillLossConfig(target="multi_view")
    got, _ = combined_target("multi_view", views, z_s, cfg, torch.float64)
    want = avsd_dense(views, z_s)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    # the target depends on the student (the gate's δ): another student gives another target ...
    other, _ = combined_target("multi_view", views, logits(14), cfg, torch.float64)
    assert (got - other).abs().max() > 1e-3
    # ... and is neither mean alone: the geometric mean (gate 0) is off
    geometric = torch.log_softmax(torch.stack([torch.log_softmax(v, -1) for v in views]).mean(0), -1)
    assert (got - geometric).abs().max() > 1e-3
    # three identical views: q* is that view whatever the student
    same, _ = combined_target("multi_view", [views[0]] * 3, z_s, cfg, torch.float64)
    torch.testing.assert_close(same, torch.log_softmax(views[0], -1), atol=TOL, rtol=0)


@pytest.mark.parametrize("target", ["anchor_residual", "multi_view"])
@pytest.mark.parametrize("mode", ["forward_kl", "reverse_kl", "jsd"])
def test_loss_from_views_is_the_loss_toward_the_combined_target(target, mode):
    """distill_token_losses(views) = distill_token_losses(one teacher whose logits are log q*), loss and gradient,
    at a temperature ≠ 1 (the views and the student are scaled before the combination)."""
    temperature = 1.3
    n = len(TEACHER_TARGETS[target].views)
    views = [logits(20 + i) for i in range(n)]
    cfg = DistillLossConfig(mode=mode, target=target, chunk_size=2, clip_tau=None)
    student = logits(30).requires_grad_()
    loss, diag = distill_token_losses(student, views, cfg, temperature=temperature)
    loss.sum().backward()
    log_q, target_kl = combined_target(
        target, [v / temperature for v in views], student.detach() / temperature, cfg, torch.float64
    )
    single = DistillLossConfig(mode=mode, chunk_size=2, clip_tau=None)
    ref_student = student.detach().clone().requires_grad_()
    want, want_diag = distill_token_losses(ref_student / temperature, log_q, single)
    want.sum().backward()
    torch.testing.assert_close(loss, want, atol=TOL, rtol=0)
    torch.testing.assert_close(student.grad, ref_student.grad, atol=TOL, rtol=0)
    torch.testing.assert_close(diag["token_kl"], want_diag["token_kl"], atol=TOL, rtol=0)
    torch.testing.assert_close(diag["target_kl"], target_kl, atol=TOL, rtol=0)
    assert float(target_kl.min()) > 1e-4  # the combination moved q* off the first view
    # control: a wrong last view (the first one again) is another target
    wrong, _ = distill_token_losses(student.detach(), [*views[:-1], views[0]], cfg, temperature=temperature)
    assert (wrong - loss.detach()).abs().max() > 1e-4


@pytest.mark.parametrize("target", ["single", "anchor_residual", "multi_view"])
def test_fused_path_equals_logit_path_with_views(target):
    """The fused driver projects each view's hidden states chunk by chunk and combines per chunk: the same loss,
    diagnostics and gradients as the logit path fed the projected views (fp64)."""
    g = torch.Generator().manual_seed(40)
    rows, hidden = 7, 16
    n = len(TEACHER_TARGETS[target].views)
    h_s = torch.randn(rows, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(V, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    h_t = [torch.randn(rows, hidden, generator=g, dtype=torch.float64) for _ in range(n)]
    w_t = torch.randn(V, hidden, generator=g, dtype=torch.float64)
    cfg = DistillLossConfig(target=target, chunk_size=3)
    loss, diag = fused_distill_loss(h_s, w_s, h_t if n > 1 else h_t[0], w_t, cfg, temperature=1.2)
    loss.sum().backward()
    h_ref, w_ref = h_s.detach().clone().requires_grad_(), w_s.detach().clone().requires_grad_()
    want, want_diag = distill_token_losses(
        h_ref @ w_ref.t(), [h @ w_t.t() for h in h_t], cfg, temperature=1.2
    )
    want.sum().backward()
    torch.testing.assert_close(loss, want, atol=TOL, rtol=0)
    for key in ("token_kl", "top1_agree", "target_kl"):
        torch.testing.assert_close(diag[key], want_diag[key], atol=TOL, rtol=0)
    torch.testing.assert_close(h_s.grad, h_ref.grad, atol=TOL, rtol=0)
    torch.testing.assert_close(w_s.grad, w_ref.grad, atol=TOL, rtol=0)


def test_wrong_view_count_and_bad_keys_are_named_errors():
    cfg = DistillLossConfig(target="anchor_residual")
    with pytest.raises(ValueError, match="anchor_residual.*2 teacher view"):
        distill_token_losses(logits(1), logits(2), cfg)
    with pytest.raises(ValueError, match="distill.target must be one of"):
        DistillLossConfig(target="anchor").validate()
    with pytest.raises(ValueError, match="distill.residual_lambda"):
        DistillLossConfig(residual_lambda=-0.1).validate()
    with pytest.raises(ValueError, match="distill.residual_clip"):
        DistillLossConfig(residual_clip=0.0).validate()
    with pytest.raises(ValueError, match="already registered"):
        register_target("single", views=(View(),))(None)
    with pytest.raises(ValueError, match="unknown teacher context 'nope'"):
        register_target("broken", views=(View("nope", 1.0), View()))(lambda v, s, c: v[0])
    assert "broken" not in TEACHER_TARGETS


def test_targets_declare_their_views_alpha_and_contexts():
    assert view_contexts("anchor_residual", "privileged") == ["privileged", "privileged"]
    assert view_contexts("multi_view", "privileged") == ["privileged", "incomplete", "answer_only"]
    assert uses_alpha("anchor_residual", "privileged") and uses_alpha("single", "privileged")
    assert not uses_alpha("multi_view", "privileged") and not uses_alpha("single", "reference_free")
    with pytest.raises(ValueError, match="anchor_residual.*reference_free ignores α"):
        check_target("anchor_residual", "reference_free")
    with pytest.raises(ValueError, match="multi_view.*teacher_context=answer_only"):
        check_target("multi_view", "answer_only")
    check_target("anchor_residual", "privileged")
    check_target("multi_view", "privileged")


# ---------------------------------------------------------------- through the worker (tests/test_worker_loss.py)


def incomplete_written_out(tokenizer, info, alpha, cfg):
    """The ``incomplete`` context from the templates: the first ⌊α·m⌋ sentences, the marker, no answer line."""
    from recipe.atesd.method.prompts import split_segments

    segments = split_segments(info["reference_solution"], cfg.segmenter)
    k = math.floor(alpha * len(segments) + 1e-9)
    text = "".join(segments[:k]).rstrip() + "\n\n" + cfg.incomplete_marker
    block = cfg.reference_block_template.format(reference=text)
    user = cfg.teacher_template.format(problem=info["problem"], reference_block=block)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    return tokenizer.encode(rendered, add_special_tokens=False)


def test_incomplete_context_is_the_cut_reference_marked_without_the_answer(tokenizer, rows):
    from recipe.atesd.method.prompts import TeacherPromptConfig, row_teacher_prompt

    cfg = TeacherPromptConfig(segmenter="sentences", teacher_context="incomplete")
    full = TeacherPromptConfig(segmenter="sentences")
    for info in rows:
        half = row_teacher_prompt(tokenizer, info, 0.5, cfg)
        assert half.ids == incomplete_written_out(tokenizer, info, 0.5, cfg)
        text = tokenizer.decode(half.ids)
        assert cfg.incomplete_marker in text and "Final answer:" not in text
        # α = 1: the whole reference, unmarked: the privileged view at α = 1
        assert (
            row_teacher_prompt(tokenizer, info, 1.0, cfg).ids
            == row_teacher_prompt(tokenizer, info, 1.0, full).ids
        )


def dense_views_loss(student, teacher, tokenizer, rows, responses, view_prompts, combine, tau=0.05):
    """The worker's loss written densely: per sequence, the teacher's logits on each view's prompt ⊕ response,
    combined by ``combine(views, student)`` into log q*, then Σ_v min(q*(log q* − log p_S), τ), token mean."""
    from test_worker_loss import TEMPERATURE

    from recipe.atesd.method.prompts import TeacherPromptConfig, student_prompt_ids

    temperature = float(torch.tensor(TEMPERATURE, dtype=torch.float32))  # as verl stores it
    total, count = 0.0, 0
    for info, resp in zip(rows, responses, strict=True):
        sp = student_prompt_ids(tokenizer, info["problem"], TeacherPromptConfig(segmenter="sentences"))
        s = student(input_ids=torch.tensor([sp + resp])).logits[0, len(sp) - 1 : -1] / temperature
        views = []
        for prompt in view_prompts(info):
            views.append(
                teacher(input_ids=torch.tensor([prompt + resp])).logits[0, len(prompt) - 1 : -1] / temperature
            )
        log_q, log_s = combine(views, s), torch.log_softmax(s, -1)
        total += torch.clamp(log_q.exp() * (log_q - log_s), max=tau).sum()
        count += len(resp)
    return total / count


@pytest.mark.parametrize("target", ["anchor_residual", "multi_view"])
def test_worker_loss_under_a_target_matches_dense_reference(tokenizer, rows, target):
    """fp64 tiny models: the worker's loss under ``distill.target`` equals the dense loss toward q* combined from
    the views' prompts built independently (bound 1e-10: fp64 rounding, tests/test_worker_loss.py); the control, a
    worker whose views are all the controller's α view (``single``), misses it by more than 1e3 × the bound."""
    from conftest import tiny_qwen
    from test_worker_loss import responses_for, whole_batch_loss

    from recipe.atesd.method.prompts import TeacherPromptConfig, row_teacher_prompt

    vocab = len(tokenizer)
    student, teacher = tiny_qwen(vocab, 1), tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=11)
    cfg = TeacherPromptConfig(segmenter="sentences")
    alpha = 0.5
    got, worker = whole_batch_loss(
        tokenizer, student, teacher, cfg, rows, responses, alpha=alpha, target=target
    )

    def ids(info, a, context="privileged"):
        return row_teacher_prompt(
            tokenizer, info, a, TeacherPromptConfig(segmenter="sentences", teacher_context=context)
        ).ids

    if target == "anchor_residual":

        def view_prompts(info):
            return [ids(info, alpha), ids(info, 1.0)]

        def combine(views, s):  # the formula in torch (the python-float one above is for small V)
            log_p, log_f = torch.log_softmax(views[0], -1), torch.log_softmax(views[1], -1)
            return torch.log_softmax(log_p + 0.8 * torch.clamp(log_f - log_p, -5.0, 5.0), -1)
    else:

        def view_prompts(info):
            return [
                ids(info, 1.0),
                incomplete_written_out(tokenizer, info, 0.5, cfg),
                ids(info, 0.0, "answer_only"),
            ]

        def combine(views, s):  # AVSD's gate in torch, term by term as avsd_dense
            lq = [torch.log_softmax(v, -1) for v in views]
            ls = torch.log_softmax(s, -1)
            g = sum(lq) / 3
            gap = torch.clamp(torch.log(sum(x.exp() for x in lq) / 3) - g, min=0.0)
            c = (sum(x - ls for x in lq) / 3).abs()
            spread = sum((x - ls).abs() for x in lq) / 3
            gate = c / (spread + 1e-8) * c / (c + gap + 1e-8)
            return torch.log_softmax(g + gate * gap, -1)

    want = dense_views_loss(student, teacher, tokenizer, rows, responses, view_prompts, combine).item()
    bound = 1e-10
    assert got.item() == pytest.approx(want, abs=bound)
    assert worker._report.target_kl_sum > 0
    single, _ = whole_batch_loss(tokenizer, student, teacher, cfg, rows, responses, alpha=alpha)
    assert abs(single.item() - want) > 1e3 * bound, (single.item(), want)
