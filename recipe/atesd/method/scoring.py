"""Teacher scoring: pair each student response with its privileged teacher context (pure torch).

The student and the teacher score the *same* response tokens ŷ under different contexts
(docs/method.md §1):  student rows come from ``c_S ⊕ ŷ`` (verl's packed batch), teacher rows from
``c_T(α) ⊕ ŷ`` built here. Only the rows that predict response tokens are ever materialised
as logits; everything else stays hidden states.

Alignment rule (causal LM, verl's packed micro-batches; docs/design.md): logit row j predicts token j+1, so for a
packed sequence ending at offset ``end`` with response length ``L`` the response logits are rows
``[end − L − 1, end − 1)``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


def _output_head(model: torch.nn.Module) -> torch.nn.Module:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head) to score with")
    return head


@contextmanager
def _head_forward(head: torch.nn.Module, make_forward):
    """``head.forward`` = ``make_forward(original_forward)`` for the duration (nests: restores what was there)."""
    had_own = "forward" in head.__dict__
    original = head.forward
    head.forward = make_forward(original)
    try:
        yield
    finally:
        if had_own:
            head.forward = original
        else:
            del head.forward


@contextmanager
def _head_on_response_rows(model: torch.nn.Module, rows: torch.Tensor, head_fn):
    """Inside the next ``model(...)`` call, the LM head runs ``head_fn(hidden_rows, head)`` instead.

    ``hidden_rows`` = the final hidden states at ``rows`` of the flattened ``[B·keep, H]`` window, so
    the vocabulary projection only ever sees the ``ΣL_i`` rows that predict response tokens, never
    the left-padding of shorter responses. The swap happens *inside* the model's own forward, where
    FSDP has gathered the head's weight (the same seam verl's fused-kernel forward uses).
    """

    def make_forward(original):
        def forward(hidden: torch.Tensor) -> torch.Tensor:
            return head_fn(hidden.reshape(-1, hidden.shape[-1])[rows.to(hidden.device)], original)

        return forward

    with _head_forward(_output_head(model), make_forward):
        yield


def plain_linear_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's LM head, which the fused loss (``fused_loss.py``) replaces by ``h Wᵀ``: it must be a
    bias-free ``nn.Linear`` (FSDP's wrapped subclass included). A LoRA-wrapped or biased head raises."""
    head = _output_head(model)
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise ValueError(
            f"distill.fused needs a bias-free nn.Linear LM head; {type(model).__name__} has "
            f"{type(head).__name__}{'' if getattr(head, 'bias', None) is None else ' with a bias'} "
            "(set distill.fused=false)"
        )
    if getattr(model.config, "final_logit_softcapping", None):
        raise ValueError("distill.fused applies the LM head directly: final_logit_softcapping unsupported")
    return head


class _HeadCapture(torch.autograd.Function):
    """(h, W) → (h, a copy of W), inside the head's forward; the gradient of both returns through this node.

    The copy outlives the head's forward (FSDP frees a gathered W right after it: FSDP2 reshards a
    separately wrapped head, ``verl/utils/fsdp_utils.py::apply_fsdp2``). Both gradients leave through
    one node, as from ``F.linear``: the hook FSDP registers on the head's output (re-gather W for the
    backward) runs before this node, so W's gradient lands in the re-gathered W and is reduce-scattered
    with the rest of the unit. A frozen head (LoRA) gives a copy that needs no gradient. h is returned
    as a copy, not a view: FSDP2 warns that an in-place op on a view output would drop that hook.
    """

    @staticmethod
    def forward(ctx, hidden, weight):
        copy = weight.detach().clone()
        if not ctx.needs_input_grad[1]:
            ctx.mark_non_differentiable(copy)
        return hidden.clone(), copy

    @staticmethod
    def backward(ctx, grad_hidden, grad_weight):
        return grad_hidden, grad_weight


class HeadCapture:
    """While active (:func:`hidden_states_as_logits`): each ``model(...)`` call's "logits" are its final
    hidden states, and :meth:`pop` returns the head weight of that call (a copy, differentiable to W)."""

    def __init__(self, head: torch.nn.Module):
        self.head = head
        self._weights: list[torch.Tensor] = []

    def pop(self) -> torch.Tensor:
        """W of the latest forward (verl runs one per micro-batch); earlier copies are dropped."""
        if not self._weights:
            raise RuntimeError("hidden_states_as_logits: no forward of the model since the last pop")
        weight = self._weights[-1]
        self._weights.clear()
        return weight


@contextmanager
def hidden_states_as_logits(model: torch.nn.Module):
    """The student's side of the fused loss: inside, the LM head of ``model`` returns its input h
    (``[..., H]`` where logits ``[..., V]`` were) and records W (:class:`HeadCapture`, :class:`_HeadCapture`).

    Whatever verl does to the logits it does to h: dividing by the sampling temperature τ commutes
    with the head, (h/τ) Wᵀ = (h Wᵀ)/τ, so the caller projects the rows it needs chunk by chunk.
    """
    head = plain_linear_head(model)
    capture = HeadCapture(head)

    def make_forward(_original):
        def forward(hidden: torch.Tensor) -> torch.Tensor:
            out, weight = _HeadCapture.apply(hidden, head.weight)
            capture._weights.append(weight)
            return out

        return forward

    with _head_forward(head, make_forward):
        yield capture


def _forward_window(model: torch.nn.Module, batch: TeacherBatch, device):
    return model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
        logits_to_keep=batch.keep,
    )


@torch.no_grad()
def teacher_response_logits(model: torch.nn.Module, batch: TeacherBatch, device) -> torch.Tensor:
    """Run the (frozen) teacher and return its logits at the response rows: ``[ΣL_i, V]``.

    HF ``logits_to_keep`` limits the body's output to the last ``keep`` positions and the LM head
    runs on the response rows only: the long privileged prompt (and the padding) never becomes logits.
    """
    with _head_on_response_rows(model, batch.rows, lambda hidden, head: head(hidden)):
        return _forward_window(model, batch, device).logits


@torch.no_grad()
def teacher_response_hidden(
    model: torch.nn.Module,
    batch: TeacherBatch,
    device,
    shared: HeadCapture | None = None,
    weight=None,
    copied: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's side of the fused loss: final hidden states at the response rows ``[ΣL_i, H]`` and
    its LM head weight ``[V, H]`` (rows as :func:`teacher_response_logits`; no logits at all).

    When ``model``'s head is ``shared.head`` (the student's module: LoRA teacher with adapters off, or
    the live actor) the weight is ``weight`` (the student's, detached): no copy. Otherwise the
    teacher's W is copied inside its forward, where FSDP has gathered it: one ``[V, H]`` tensor — unless
    ``copied`` is that copy already, made by an earlier call on the same module (another teacher view of the
    micro-batch), which is then returned as it is.
    """
    head = plain_linear_head(model)
    if shared is not None and head is shared.head:
        if weight is None:
            raise ValueError("teacher_response_hidden: the head is shared but no weight was given")
        out = {"weight": weight.detach()}
    else:
        out = {} if copied is None else {"weight": copied}

    def keep(hidden: torch.Tensor, _head) -> torch.Tensor:
        if "weight" not in out:
            out["weight"] = head.weight.detach().clone()
        return hidden

    with _head_on_response_rows(model, batch.rows, keep):
        hidden = _forward_window(model, batch, device).logits
    return hidden, out["weight"]


@torch.no_grad()
def sequence_token_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    target_ids: list[list[int]],
    pad_token_id: int,
    device,
    chunk_rows: int = 512,
    counted: list[bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of ``log p(target | prompt)`` over the counted target tokens of a batch (probe signals).

    ``log p(y_j) = z_{j,y_j} − logsumexp_v z_{j,v}`` (= −cross-entropy), ``chunk_rows`` response rows
    at a time inside the forward, so at most ``[chunk_rows, V]`` logits exist at once (probe targets
    are whole reference solutions, far longer than a training micro-batch's responses).
    Returns ``(sum_logprob, n_tokens)`` as 0-d fp64 tensors. Exactly ONE forward of ``model`` runs for any
    non-empty batch — also when every row is uncounted (``counted[i]`` False) or has an empty target —
    because under FSDP each forward is a collective that every rank must join; such rows are scored on a
    one-token stand-in target and contribute nothing.
    """
    if not prompt_ids:
        raise ValueError("sequence_token_logprobs: empty batch (every rank must run one forward per chunk)")
    counted = [True] * len(prompt_ids) if counted is None else list(counted)
    if not len(counted) == len(prompt_ids) == len(target_ids):
        raise ValueError("sequence_token_logprobs: prompt_ids, target_ids and counted differ in length")
    keep = [c and len(t) > 0 for c, t in zip(counted, target_ids, strict=True)]
    targets_or_stub = [t if k else [pad_token_id] for t, k in zip(target_ids, keep, strict=True)]
    if getattr(model.config, "final_logit_softcapping", None):
        raise NotImplementedError(
            "probe scoring applies the LM head directly: final_logit_softcapping unsupported"
        )
    batch = build_teacher_batch(prompt_ids, targets_or_stub, pad_token_id)
    targets = torch.cat([torch.tensor(t, dtype=torch.long) for t in targets_or_stub])

    def token_logprobs(hidden: torch.Tensor, head) -> torch.Tensor:
        out = []
        for h, y in zip(hidden.split(chunk_rows), targets.to(hidden.device).split(chunk_rows), strict=True):
            z = head(h)
            # cross_entropy = logsumexp(z) − z_y in one fused pass (faster on CPU than the two ops)
            out.append(
                -F.cross_entropy(z.to(torch.promote_types(z.dtype, torch.float32)), y, reduction="none")
            )
        return torch.cat(out)

    weight = torch.cat([torch.full((len(t),), float(k)) for t, k in zip(targets_or_stub, keep, strict=True)])
    with _head_on_response_rows(model, batch.rows, token_logprobs):
        logp = _forward_window(model, batch, device).logits
    return (logp.double().cpu() * weight.double()).sum(), weight.double().sum()
