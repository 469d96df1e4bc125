r"""Does privileged context help in the toy world? Accuracy and remainder NLL of one model given α of the reference.

``python -m recipe.atesd.toy.exposure_curve --model artifacts/toy-qwen3 --out docs/toy``

On held-out problems (split ``eval`` of ``recipe/atesd/toy/task.py``, :data:`N_PER_DIFFICULTY` per difficulty),
for the student context c_S and the teacher context c_T(α), α ∈ :data:`ALPHAS` (``recipe/atesd/method/prompts.py``,
the toy world's ``prompt_config``):

- **accuracy**: greedy answer from the context, graded by ``recipe/atesd/rewards/toy_grader.py``;
- **remainder NLL**: mean per-token NLL, given c_T(α) and the revealed step lines as the start of the
  response, of the rest of the reference solution (its unrevealed step lines, the ``\boxed{}`` line and
  ``<|im_end|>``) — what the teacher still has to predict; at α = 1 only the answer line and the end token;
- **departing-prefix agreement**: for problems whose two orders differ, the correct solution in the order the
  reference does *not* take is fed after c_T(α) (c_S for the student); the share of its step results (the
  digit after each ``=``) that the context predicts top-1. This is what a teacher scoring a correct student
  who took the other order must get right; where the teacher copies the reference's digits instead, it misses.

Writes ``exposure_curve.json`` (per context and difficulty) and ``exposure_curve.png`` (two panels: accuracy
and remainder NLL against α, one line per difficulty, c_S as dashed accuracy lines). Deterministic: greedy
decoding, fixed problems (seed 0), fp32 model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from recipe.atesd.method.prompts import split_segments, student_prompt_ids, teacher_prompt_ids
from recipe.atesd.rewards.toy_grader import compute_score
from recipe.atesd.toy import task

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
N_PER_DIFFICULTY = 16


def held_out(n_per_difficulty: int = N_PER_DIFFICULTY, seed: int = 0) -> list[dict]:
    """``n_per_difficulty`` eval-split problems of each difficulty 2..8."""
    return task.generate("eval", n_per_difficulty * len(task.DIFFICULTIES), seed=seed)


@torch.no_grad()
def greedy(model, tok, prompts: list[list[int]], max_new_tokens: int = 64) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batch), decoded without special tokens."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return [tok.decode(row[width:], skip_special_tokens=True) for row in out]


def accuracy(model, tok, problems: list[dict], alpha: float | None) -> dict[int, float]:
    """Greedy accuracy per difficulty from c_S (``alpha=None``) or from c_T(alpha)."""
    cfg = task.prompt_config()
    if alpha is None:
        prompts = [student_prompt_ids(tok, p["problem"], cfg) for p in problems]
    else:
        prompts = [
            teacher_prompt_ids(tok, p["problem"], p["reference_solution"], alpha, cfg, answer=p["answer"]).ids
            for p in problems
        ]
    by_k: dict[int, list[float]] = {}
    for p, text in zip(problems, greedy(model, tok, prompts), strict=True):
        by_k.setdefault(p["difficulty"], []).append(compute_score("toy_sum", text, p["answer"]))
    return {k: sum(v) / len(v) for k, v in sorted(by_k.items())}


@torch.no_grad()
def remainder_nll(model, tok, problems: list[dict], alpha: float) -> dict[int, float]:
    """Mean per-token NLL per difficulty of the reference after its revealed lines, given c_T(alpha) + those lines.

    NLL = −(1/|R|) Σ_{t ∈ R} log p(y_t | c_T(α), y_<t), y = reference + ``<|im_end|>``, R = the tokens after the
    revealed prefix (the first ``n_revealed`` segments of the ``lines`` segmenter).
    """
    cfg = task.prompt_config()
    by_k: dict[int, list[float]] = {}
    for p in problems:
        prompt = teacher_prompt_ids(
            tok, p["problem"], p["reference_solution"], alpha, cfg, answer=p["answer"]
        )
        prefix = "".join(split_segments(p["reference_solution"], cfg.segmenter)[: prompt.revealed.n_revealed])
        if not p["reference_solution"].startswith(prefix):
            raise ValueError(f"{p['id']}: revealed segments are not a prefix of the reference")
        head = tok.encode(prefix, add_special_tokens=False)
        full = tok.encode(p["reference_solution"], add_special_tokens=False) + [tok.eos_token_id]
        if full[: len(head)] != head:
            raise ValueError(f"{p['id']}: the revealed prefix does not tokenise as a prefix of the reference")
        ids = torch.tensor([prompt.ids + full])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        start = len(prompt.ids) + len(head) - 1  # logits at position i predict token i + 1
        nll = -logp[start:].gather(-1, targets[start:, None]).mean().item()
        by_k.setdefault(p["difficulty"], []).append(nll)
    return {k: sum(v) / len(v) for k, v in sorted(by_k.items())}


@torch.no_grad()
def departing_agreement(model, tok, problems: list[dict], alpha: float | None) -> dict[int, float]:
    """Per difficulty: share of step results of the other-order solution predicted top-1 (module docstring)."""
    cfg = task.prompt_config()
    equals = tok.convert_tokens_to_ids("=")
    by_k: dict[int, list[float]] = {}
    for p in problems:
        terms = task.parse_problem(p["problem"])
        other = task.solution(terms, "rtl" if p["order"] == "ltr" else "ltr")
        if other == p["reference_solution"]:
            continue  # palindromic terms: one solution only
        if alpha is None:
            prompt = student_prompt_ids(tok, p["problem"], cfg)
        else:
            prompt = teacher_prompt_ids(
                tok, p["problem"], p["reference_solution"], alpha, cfg, answer=p["answer"]
            ).ids
        response = tok.encode(other, add_special_tokens=False)
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
        results = [i + 1 for i, t in enumerate(response[:-1]) if t == equals]  # the digit after each '='
        hits = [int(logits[i].argmax()) == response[i] for i in results]
        by_k.setdefault(p["difficulty"], []).append(sum(hits) / len(hits))
    return {k: sum(v) / len(v) for k, v in sorted(by_k.items())}


def curve(model, tok, problems: list[dict]) -> dict:
    """Every figure of the module docstring, as a JSON-ready dict."""
    return {
        "n_per_difficulty": {k: sum(p["difficulty"] == k for p in problems) for k in task.DIFFICULTIES},
        "student": {
            "accuracy": accuracy(model, tok, problems, None),
            "departing_agreement": departing_agreement(model, tok, problems, None),
        },
        "teacher": {
            str(a): {
                "accuracy": accuracy(model, tok, problems, a),
                "remainder_nll": remainder_nll(model, tok, problems, a),
                "departing_agreement": departing_agreement(model, tok, problems, a),
            }
            for a in ALPHAS
        },
    }


def mean_over_difficulties(values: dict) -> float:
    return sum(values.values()) / len(values)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, nll_ax) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.cm.viridis([i / (len(task.DIFFICULTIES) - 1) for i in range(len(task.DIFFICULTIES))])
    for color, k in zip(colors, task.DIFFICULTIES, strict=True):
        key = str(k)  # JSON keys
        acc = [result["teacher"][str(a)]["accuracy"][key] for a in ALPHAS]
        nll = [result["teacher"][str(a)]["remainder_nll"][key] for a in ALPHAS]
        acc_ax.plot(ALPHAS, acc, marker="o", color=color, label=f"{k} terms")
        acc_ax.axhline(result["student"]["accuracy"][key], color=color, linestyle="--", linewidth=0.8)
        nll_ax.plot(ALPHAS, nll, marker="o", color=color, label=f"{k} terms")
    acc_ax.set(
        xlabel="α (share of the reference's steps revealed)",
        ylabel="greedy held-out accuracy",
        ylim=(-0.02, 1.02),
    )
    acc_ax.set_title("accuracy from c_T(α) (dashed: from c_S)")
    nll_ax.set(xlabel="α", ylabel="NLL / token of the unrevealed rest")
    nll_ax.set_title("remainder NLL given c_T(α)")
    nll_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="artifacts/toy-qwen3")
    parser.add_argument("--out", default="docs/toy")
    parser.add_argument("--per-difficulty", type=int, default=N_PER_DIFFICULTY)
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    result = curve(model, tok, held_out(args.per_difficulty))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "exposure_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(json.loads((out / "exposure_curve.json").read_text()), out / "exposure_curve.png")
    s = result["student"]
    print(
        f"c_S: accuracy {mean_over_difficulties(s['accuracy']):.3f}  "
        f"departing agreement {mean_over_difficulties(s['departing_agreement']):.3f}"
    )
    for a in ALPHAS:
        r = result["teacher"][str(a)]
        print(
            f"c_T(α={a}): accuracy {mean_over_difficulties(r['accuracy']):.3f}  "
            f"remainder NLL {mean_over_difficulties(r['remainder_nll']):.4f}  "
            f"departing agreement {mean_over_difficulties(r['departing_agreement']):.3f}"
        )
    return result


if __name__ == "__main__":
    main()
