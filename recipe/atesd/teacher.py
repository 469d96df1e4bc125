"""Teacher scoring: pair each student response with its privileged teacher context (pure torch).

The student and the teacher score the *same* response tokens ŷ under different contexts
(method.md §1):  student rows come from ``c_S ⊕ ŷ`` (verl's packed batch), teacher rows from
``c_T(α) ⊕ ŷ`` built here. Only the rows that predict response tokens are ever materialised
as logits; everything else stays hidden states.

Alignment rule (verl-map.md "Packing and alignment"): logit row j predicts token j+1, so for a
packed sequence ending at offset ``end`` with response length ``L`` the response logits are rows
``[end − L − 1, end − 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def packed_response_rows(cu_seqlens: torch.Tensor, response_lengths: torch.Tensor) -> torch.Tensor:
    """Row indices (into packed ``[nnz, V]`` logits) that predict each response token, in order.

    For sequence i with end ``e_i = cu_seqlens[i+1]`` and response length ``L_i``:
    rows ``e_i − L_i − 1 … e_i − 2``.
    """
    ends = cu_seqlens[1:].to(torch.long)
    lengths = response_lengths.to(torch.long)
    if ends.shape != lengths.shape:
        raise ValueError(
            f"cu_seqlens has {ends.numel()} sequences but response_lengths has {lengths.numel()}"
        )
    seq_lengths = cu_seqlens.diff().to(torch.long)
    if bool((lengths >= seq_lengths).any()):
        raise ValueError("a response is not shorter than its packed sequence (the prompt must be non-empty)")
    starts = ends - lengths - 1
    offsets = torch.arange(int(lengths.sum()), device=cu_seqlens.device)
    seq_of_token = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    first_token = torch.cumsum(lengths, 0) - lengths
    return starts[seq_of_token] + (offsets - first_token[seq_of_token])


@dataclass
class TeacherBatch:
    """Left-padded teacher sequences ``c_T ⊕ ŷ`` so that every response ends at the last column.

    ``keep`` = 1 + the longest response: the number of trailing positions whose logits are
    needed (pass as HF ``logits_to_keep``); ``rows`` indexes the flattened ``[B·keep, V]``
    logits to give the teacher's response rows in the same order as :func:`packed_response_rows`.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    keep: int
    rows: torch.Tensor


def build_teacher_batch(
    prompt_ids: list[list[int]], response_ids: list[list[int]], pad_token_id: int
) -> TeacherBatch:
    """Left-pad ``prompt_i ⊕ response_i`` and index the rows that predict each response token."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} teacher prompts for {len(response_ids)} responses")
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids, strict=True)]
    width = max(len(s) for s in seqs)
    keep = max(len(r) for r in response_ids) + 1
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    rows = []
    for i, (seq, resp) in enumerate(zip(seqs, response_ids, strict=True)):
        input_ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, width - len(seq) :] = 1
        # kept window covers positions [width-keep, width); response token j of this row is
        # predicted at position width-len(resp)-1+j, i.e. window index keep-len(resp)-1+j.
        first = keep - len(resp) - 1
        rows.append(i * keep + first + torch.arange(len(resp)))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return TeacherBatch(input_ids, attention_mask, position_ids, keep, torch.cat(rows))


@torch.no_grad()
def teacher_response_logits(model: torch.nn.Module, batch: TeacherBatch, device) -> torch.Tensor:
    """Run the (frozen) teacher and return its logits at the response rows: ``[ΣL_i, V]``.

    Uses HF ``logits_to_keep`` so the LM head runs on the last ``keep`` positions only; the long
    privileged prompt never becomes ``[S, V]`` logits.
    """
    out = model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
        logits_to_keep=batch.keep,
    )
    logits = out.logits
    return logits.reshape(-1, logits.shape[-1])[batch.rows.to(logits.device)]


@torch.no_grad()
def sequence_token_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    target_ids: list[list[int]],
    pad_token_id: int,
    device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of ``log p(target | prompt)`` over all target tokens of a batch (probe signals).

    Returns ``(sum_logprob, n_tokens)`` as 0-d fp64 tensors; empty targets contribute nothing.
    """
    pairs = [(p, t) for p, t in zip(prompt_ids, target_ids, strict=True) if len(t) > 0]
    if not pairs:
        return torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    batch = build_teacher_batch([p for p, _ in pairs], [t for _, t in pairs], pad_token_id)
    logits = teacher_response_logits(model, batch, device)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = torch.cat([torch.tensor(t, dtype=torch.long) for _, t in pairs]).to(logits.device)
    # log p(y) = z_y − logsumexp(z): no second [N, V] buffer
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return logp.double().sum().cpu(), torch.tensor(float(targets.numel()), dtype=torch.float64)
