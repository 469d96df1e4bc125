"""Teacher/student response alignment (recipe/atesd/method/scoring.py) against direct per-sequence forwards."""

import pytest
import torch
from conftest import tiny_qwen

from recipe.atesd.method.scoring import (
    build_teacher_batch,
    packed_response_rows,
    sequence_token_logprobs,
    teacher_response_logits,
)


@pytest.fixture(scope="module")
def model():
    return tiny_qwen(97, seed=0)


def test_packed_rows_follow_the_shift_by_one_rule():
    # two sequences: prompt 3 + response 2, prompt 2 + response 4 → packed length 5 + 6
    cu = torch.tensor([0, 5, 11])
    rows = packed_response_rows(cu, torch.tensor([2, 4]))
    assert rows.tolist() == [2, 3, 6, 7, 8, 9]


def test_packed_rows_reject_response_without_prompt():
    with pytest.raises(ValueError, match="prompt must be non-empty"):
        packed_response_rows(torch.tensor([0, 3]), torch.tensor([3]))


def test_teacher_rows_equal_unpadded_forward(model):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13]]
    responses = [[20, 21, 22], [30, 31, 32, 33, 34]]
    batch = build_teacher_batch(prompts, responses, pad_token_id=0)
    got = teacher_response_logits(model, batch, "cpu")
    want = []
    for p, r in zip(prompts, responses, strict=True):
        ids = torch.tensor([p + r])
        logits = model(input_ids=ids).logits[0]
        want.append(logits[len(p) - 1 : len(p) + len(r) - 1])
    torch.testing.assert_close(got, torch.cat(want), atol=1e-9, rtol=1e-9)


def test_student_packed_rows_match_teacher_rows_when_contexts_agree(model):
    """Same context on both sides → the student's packed rows and the teacher's rows are the same logits."""
    prompts = [[3, 4, 5], [6, 7, 8, 9]]
    responses = [[40, 41], [50, 51, 52]]
    packed = torch.tensor(
        [p + r for p, r in zip(prompts, responses, strict=True)][0]
        + [p + r for p, r in zip(prompts, responses, strict=True)][1]
    )
    cu = torch.tensor([0, 5, 12])
    # packed forward per sequence (no cross-sequence attention), concatenated like verl's rmpad logits
    student = torch.cat([model(input_ids=packed[None, cu[i] : cu[i + 1]]).logits[0] for i in range(2)])
    rows = packed_response_rows(cu, torch.tensor([2, 3]))
    teacher = teacher_response_logits(model, build_teacher_batch(prompts, responses, 0), "cpu")
    torch.testing.assert_close(student[rows], teacher, atol=1e-9, rtol=1e-9)


def test_sequence_logprobs_sum_and_skip_empty_targets(model):
    prompts = [[5, 6], [7, 8, 9], [1, 2]]
    targets = [[10, 11, 12], [], [13]]
    total, count = sequence_token_logprobs(model, prompts, targets, 0, "cpu")
    want = 0.0
    for p, t in zip(prompts, targets, strict=True):
        if not t:
            continue
        logits = model(input_ids=torch.tensor([p + t])).logits[0]
        logp = torch.log_softmax(logits[len(p) - 1 : -1], -1)
        want += logp.gather(-1, torch.tensor(t)[:, None]).sum().item()
    assert count.item() == 4
    assert total.item() == pytest.approx(want, abs=1e-9)


def test_lm_head_projects_only_response_rows_and_is_restored(model):
    """No logits for left padding or prompt rows: the head sees ΣL_i rows (in chunks for the probe)."""
    head = model.get_output_embeddings()
    class_forward = head.forward
    seen = []

    def spy(hidden):
        seen.append(hidden.shape[0])
        return class_forward(hidden)

    head.forward = spy
    try:
        prompts, responses = [[5, 6, 7, 8, 9, 10], [12, 13]], [[20, 21], [30, 31, 32, 33, 34]]
        teacher_response_logits(model, build_teacher_batch(prompts, responses, 0), "cpu")
        assert seen == [7]  # not 2 sequences × keep 6 = 12
        seen.clear()
        chunked = sequence_token_logprobs(model, prompts, responses, 0, "cpu", chunk_rows=3)
        assert seen == [3, 3, 1]
        assert head.forward is spy  # an instance-level forward is put back, not deleted
    finally:
        del head.forward
    whole = sequence_token_logprobs(model, prompts, responses, 0, "cpu")
    assert chunked[0].item() == pytest.approx(whole[0].item(), abs=1e-9)
    assert "forward" not in head.__dict__


def test_sequence_logprobs_always_runs_one_forward_and_counts_only_counted_rows(model):
    """Under FSDP a forward is a collective: a rank whose rows are all padding or empty must still run it."""
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        prompts, targets = [[5, 6], [7, 8, 9]], [[10, 11], [12]]
        total, count = sequence_token_logprobs(model, prompts, targets, 0, "cpu", counted=[True, False])
        first, n_first = sequence_token_logprobs(model, prompts[:1], targets[:1], 0, "cpu")
        assert (count.item(), n_first.item()) == (2, 2)
        assert total.item() == pytest.approx(first.item(), abs=1e-9)  # the uncounted row adds nothing
        calls.clear()
        total, count = sequence_token_logprobs(model, prompts, [[], [12]], 0, "cpu", counted=[True, False])
        assert (total.item(), count.item(), len(calls)) == (0.0, 0.0, 1)
    finally:
        handle.remove()
    with pytest.raises(ValueError, match="empty batch"):
        sequence_token_logprobs(model, [], [], 0, "cpu")


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_probe_shard_gives_every_rank_the_same_forwards_and_counts_each_row_once(batch_size):
    """8 probe rows on 16 ranks (the presets' probe.size on 16 GPUs), 132 on 16, 70 on 8, and friends."""
    from recipe.atesd.method.probe import ProbeSet

    for n, world in [(8, 16), (132, 16), (70, 8), (5, 2), (1, 3), (7, 1)]:
        probe = ProbeSet.__new__(ProbeSet)
        probe.rows = [{"id": f"r{i}"} for i in range(n)]
        probe.student_prompts = [[i] for i in range(n)]
        probe.references = [[i, i] for i in range(n)]
        shards = [list(probe.shard(rank, world, batch_size)) for rank in range(world)]
        shapes = {tuple(len(c.rows) for c in chunks) for chunks in shards}
        assert len(shapes) == 1 and all(shapes.pop()), (n, world)  # same chunk count and sizes, none empty
        counted = [c.rows[i]["id"] for chunks in shards for c in chunks for i, k in enumerate(c.counted) if k]
        assert sorted(counted) == sorted(r["id"] for r in probe.rows), (n, world)
    with pytest.raises(ValueError, match="invalid"):
        next(probe.shard(3, 2, 1))
