"""How fast can the toy student learn long problems at all? Supervised fine-tuning on ground truth, as a ceiling.

``python benchmarks/toy_sft_ceiling.py [--lr 1e-3] [--steps 400] [--batch 16] [--eval-every 100]``

Starts from the model ``make toy`` installs (``artifacts/toy-qwen3``; ``--model`` for another) and trains it, in the *student* format c_S,
on reference solutions of fresh train-split problems of every difficulty 2..8 (``recipe/atesd/toy/task.py``,
seed 1) — what distillation could at best teach, with the answers given. Every ``--eval-every`` steps it prints
greedy held-out accuracy per difficulty and its mean (``recipe/atesd/toy/exposure_curve.py``: 16 eval problems
per difficulty, the figure ``make demo`` reports is verl's on the 112 val rows, the same distribution). Pure
torch + transformers (no stack), deterministic; ~10 s per 100 steps on 2 cores. docs/toy.md quotes its output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atesd.method.prompts import student_prompt_ids  # noqa: E402 - after the path fix above
from recipe.atesd.toy import task  # noqa: E402
from recipe.atesd.toy.exposure_curve import accuracy, held_out  # noqa: E402
from recipe.atesd.toy.pretrain import sft_batch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="artifacts/toy-qwen3")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    cfg, problems = task.prompt_config(), held_out()
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    train = task.generate("train", args.batch * args.steps, seed=1)

    def report(step: int, loss: float, t0: float) -> None:
        model.eval()
        acc = accuracy(model, tok, problems, None)
        model.train()
        per_k = " ".join(f"{acc[k]:.2f}" for k in task.DIFFICULTIES)
        print(
            f"{step:>5}  {loss:6.3f}  {per_k}  {sum(acc.values()) / len(acc):.3f}  {time.perf_counter() - t0:5.0f}s"
        )

    print(f"{'step':>5}  {'loss':>6}  acc k={'/'.join(map(str, task.DIFFICULTIES))}  mean  wall")
    t0 = time.perf_counter()
    report(0, float("nan"), t0)
    model.train()
    for step in range(1, args.steps + 1):
        rows = train[(step - 1) * args.batch : step * args.batch]
        ids, mask, labels = sft_batch(
            [
                (
                    student_prompt_ids(tok, p["problem"], cfg),
                    tok.encode(p["reference_solution"], add_special_tokens=False) + [tok.eos_token_id],
                )
                for p in rows
            ],
            tok.pad_token_id,
        )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if step % args.eval_every == 0:
            report(step, loss.item(), t0)


if __name__ == "__main__":
    main()
