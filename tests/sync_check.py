"""Test helper: does the rollout engine hold the weights it should? (issue 31, the weight-sync check)

On-policy distillation rests on vLLM sampling from the actor's current weights: the trainer syncs them to the
engine before the first rollout, after every update and after a resume. This check compares, token by token, the
engine's log-probability of each sampled response token — vLLM's ``raw_logprobs`` (the model's own distribution,
no temperature or top-k/p), recorded by tests/rollout_capture.py with ``actor_rollout_ref.rollout.
calculate_log_probs=true`` — with the same token's log-probability under the weights the engine should hold at
that step: the actor after the previous update, rebuilt from its checkpoint (tests/export_check.py), or the
initial model before any update. The weights are rounded to bf16, as the sync sends them, and run in fp32; what
is left is vLLM's bf16 compute (its kernels round the activations). The control is the same rollouts scored under
the weights of another step: what an engine that missed a sync would have sampled from.
"""

import json
import os
from pathlib import Path

import torch
from integration_utils import REPO_ROOT

# The engine's log-prob of every sampled token, as the model computes it (no temperature, top-k/p): the check's
# input. verl's own rollout/actor metric (training/rollout_probs_diff_*) then compares raw engine log-probs with
# temperature-scaled actor ones, so the stacks that set this do not read it.
ENGINE_LOGPROBS = [
    "actor_rollout_ref.rollout.calculate_log_probs=true",
    "actor_rollout_ref.rollout.logprobs_mode=raw_logprobs",
]


def rollout_capture(folder: Path) -> dict:
    """The environment that loads tests/rollout_capture.py in every stack process: each rollout request's ids and
    engine log-probs, appended to ``folder``."""
    return {
        "ATESD_ROLLOUT_CAPTURE_DIR": str(folder),
        "VERL_USE_EXTERNAL_MODULES": "rollout_capture",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH")])),
    }


def read_logprob_records(folder: Path) -> dict[int, list[dict]]:
    """step → the requests of one stack at that trainer step (validation at step 0 included), each with the
    engine's response log-probs (an error when a request has none: ``rollout.calculate_log_probs`` is off)."""
    by_step: dict[int, list[dict]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record.get("response_logprobs") is not None, "a request carries no engine log-probs"
            by_step.setdefault(record["step"], []).append(record)
    return by_step


def as_synced(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every parameter rounded to bf16 (what the weight sync hands vLLM), kept in fp32."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model.float().eval()


def logprob_gaps(records: list[dict], model: torch.nn.Module) -> torch.Tensor:
    """|log p_engine − log p_model| of every response token of ``records`` (fp64, concatenated)."""
    gaps = []
    with torch.no_grad():
        for r in records:
            prompt, response = r["prompt_ids"], r["response_ids"]
            tokens = torch.tensor([prompt + response])
            logits = model(input_ids=tokens).logits[0, len(prompt) - 1 : -1].double()
            mine = torch.log_softmax(logits, -1).gather(-1, tokens[0, len(prompt) :, None]).squeeze(-1)
            engine = torch.tensor(r["response_logprobs"], dtype=torch.float64)
            assert engine.shape == mine.shape, (engine.shape, mine.shape)
            gaps.append((engine - mine).abs())
    return torch.cat(gaps)


def describe(gaps: torch.Tensor) -> str:
    return f"mean {gaps.mean():.4f} p99 {torch.quantile(gaps, 0.99):.4f} max {gaps.max():.4f} ({gaps.numel()} tokens)"
