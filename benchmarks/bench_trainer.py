"""Trainer benchmark on the tiny CPU setup (prints figures; not a test).

1. Step time, measured in one run of this script, one stack after another with the same data, model,
   batch and response length: ATESD (adaptive) vs fixed α=1 (OPSD) vs verl's own GRPO with n=1.
   Steady state = the *mean* of ``timing_s/step`` over steps 2…N (step 1 includes warm-up), with N−1
   a whole number of hold windows, so every window-start cost (controller decision, α broadcast, the
   probe's teacher-grounding g for the new α) is counted at its true rate. ATESD uses the method's
   hold window H=5 with L=5, B=2 so the controller also updates inside the run (at step 11).
   Also the controller's share of the ATESD step (decide + observe round trips).
2. Teacher-scoring time at α=0.5 vs α=1 on long references: the teacher forward of ``worker.py``
   (``teacher.build_teacher_batch`` + ``teacher_response_logits``) on the tiny model, for the longest
   references of the bundled training data, same responses, median of repeats.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 11] [--hold-window 5] [--skip-stacks] [--world toy]

``--world toy`` runs the three stacks on the toy world (``+world=toy``, docs/toy.md: batch 16, 64 response
tokens, 111-token vocabulary; ``make toy`` installs it) instead of the tiny random model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# The embedded default ATESD setup (batch 4, 64 response tokens, n=1, probe of 8 references), stated
# explicitly so verl's GRPO (whose tiny config differs) runs the same batch; validation and checkpoints
# are off so the steps time the algorithm.
TINY = [
    "data.train_batch_size=4",
    "data.max_prompt_length=256",
    "data.max_response_length=64",
]
TINY_GRPO = [
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "reward.custom_reward_function.path=" + str(REPO / "recipe/atesd/rewards/math_grader.py"),
]
# The toy world's config group sets the same keys for both entry points.
WORLDS = {"tiny": (TINY, TINY_GRPO), "toy": (["+world=toy"], [])}
SHARED = [
    "actor_rollout_ref.rollout.n=1",
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
]


def run(
    module: str, overrides: list[str], steps: int, workdir: Path, name: str, world: str = "tiny"
) -> list[dict]:
    from integration_utils import python_module, ray_temp_overrides, run_stack

    metrics = workdir / f"{name}.jsonl"
    result = run_stack(
        python_module(
            module,
            *WORLDS[world][0],
            *SHARED,
            *overrides,
            f"trainer.total_training_steps={steps}",
            f"trainer.default_local_dir={workdir / name}",
            *ray_temp_overrides(workdir / f"{name}-ray"),
        ),
        workdir=workdir,
        timeout_s=1800,
        name=name,
        env={"VERL_FILE_LOGGER_PATH": str(metrics)},
    )
    if result.returncode != 0:
        raise SystemExit(f"{name}: {result.describe()}")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [r["data"] for r in sorted(rows, key=lambda r: r["step"]) if "timing_s/step" in r["data"]]


def steady(rows: list[dict], key: str) -> float:
    return statistics.mean(r.get(key, 0.0) for r in rows[1:])


def stacks(
    steps: int, hold: int, lookahead: int, batch_decisions: int, keep: Path | None, world: str
) -> None:
    if (steps - 1) % hold:
        print(f"warning: steps 2..{steps} are not a whole number of H={hold} windows: the mean is biased")
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        atesd = run(
            "recipe.atesd.main_atesd",
            [
                "controller.exposure_mode=adaptive",
                f"controller.hold_window={hold}",
                f"controller.lookahead={lookahead}",
                f"controller.batch_decisions={batch_decisions}",
            ],
            steps,
            work,
            "atesd",
            world,
        )
        opsd = run(
            "recipe.atesd.main_atesd",
            ["controller.exposure_mode=fixed", "controller.alpha=1.0"],
            steps,
            work,
            "opsd",
            world,
        )
        grpo = run(
            "recipe.atesd.main_grpo",
            WORLDS[world][1],
            steps,
            work,
            "grpo",
            world,
        )
    t_atesd, t_opsd, t_grpo = (steady(r, "timing_s/step") for r in (atesd, opsd, grpo))
    ctrl = steady(atesd, "timing_s/controller_decide") + steady(atesd, "timing_s/controller_observe")
    updates = sum(1 for r in atesd if "controller/loss" in r)
    for name, rows in (("ATESD", atesd), ("OPSD", opsd), ("GRPO", grpo)):
        print(f"{name} timing_s/step by step: " + " ".join(f"{r['timing_s/step']:.2f}" for r in rows))
    print(
        f"steady step time (mean of steps 2..{steps}): ATESD {t_atesd:.2f}s  OPSD {t_opsd:.2f}s  "
        f"GRPO(n=1) {t_grpo:.2f}s   [ATESD H={hold} L={lookahead} B={batch_decisions}: "
        f"{updates} controller update(s)]"
    )
    print(
        f"ratios: ATESD/OPSD = {t_atesd / t_opsd:.3f}   ATESD/GRPO = {t_atesd / t_grpo:.3f}   "
        f"OPSD/GRPO = {t_opsd / t_grpo:.3f}"
    )
    print(f"controller share of the ATESD step: {ctrl:.4f}s / {t_atesd:.2f}s = {100 * ctrl / t_atesd:.3f}%")
    keys = (
        "gen",
        "update_actor",
        "distill_update",
        "teacher",
        "distill_loss",
        "probe",
        "probe_nll",
        "probe_ground",
    )
    print("stage (steady mean s, share of the step): ATESD | OPSD | GRPO(n=1)")
    for key in (*keys, "update_weights", "old_log_prob", "adv"):
        cells = []
        for rows, total in ((atesd, t_atesd), (opsd, t_opsd), (grpo, t_grpo)):
            value = steady(rows, "timing_s/" + key)
            cells.append(f"{value:.2f}s {100 * value / total:5.1f}%")
        print(f"  timing_s/{key}: " + " | ".join(cells))


def teacher_scoring(repeats: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe.atesd.data.tiny_model import build_tiny_model, tokenizer_dir
    from recipe.atesd.method.prompts import TeacherPromptConfig, teacher_prompt_ids
    from recipe.atesd.method.scoring import build_teacher_batch, teacher_response_logits

    model = AutoModelForCausalLM.from_pretrained(
        build_tiny_model(REPO / "artifacts/tiny-qwen3", seed=0)
    ).eval()
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    rows = long_references(4)
    cfg = TeacherPromptConfig(segmenter="sentences")
    responses = [list(range(1000, 1256))] * len(rows)

    def timed(alpha: float) -> tuple[float, float, float]:
        prompts = [
            teacher_prompt_ids(tok, r["problem"], r["solution"], alpha, cfg, answer=r["answer"]).ids
            for r in rows
        ]
        batch = build_teacher_batch(prompts, responses, tok.pad_token_id)
        whole, body = [], []
        with torch.no_grad():
            for _ in range(repeats):
                t0 = time.perf_counter()
                teacher_response_logits(model, batch, "cpu")
                t1 = time.perf_counter()
                model.model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                )
                whole.append(t1 - t0)
                body.append(time.perf_counter() - t1)
        return statistics.median(whole), statistics.median(body), statistics.mean(len(p) for p in prompts)

    half, full = timed(0.5), timed(1.0)
    print(
        f"teacher scoring, {len(rows)} longest references x {len(responses[0])} response tokens, median of {repeats}:"
    )
    for alpha, (whole, body, length) in ((0.5, half), (1.0, full)):
        print(
            f"  alpha={alpha}: whole {whole * 1e3:.1f} ms, transformer body {body * 1e3:.1f} ms "
            f"(mean teacher prompt {length:.0f} tokens)"
        )
    print(
        f"  ratio alpha=0.5 / alpha=1.0: whole {half[0] / full[0]:.3f}, body {half[1] / full[1]:.3f}, "
        f"prompt tokens {half[2] / full[2]:.3f}"
    )


def long_references(n: int) -> list[dict]:
    """The n longest reference solutions: the shared training files when present, else the bundled sample."""
    shared = REPO.parent / "shared" / "data" / "train"
    files = sorted(shared.glob("*.jsonl")) or [REPO / "data" / "train" / "sample.jsonl"]
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: len(r["solution"]), reverse=True)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=11, help="steps per stack; 2..N are measured")
    parser.add_argument("--hold-window", type=int, default=5, help="ATESD H (method default 5)")
    parser.add_argument("--lookahead", type=int, default=5, help="ATESD L")
    parser.add_argument("--batch-decisions", type=int, default=2, help="ATESD B")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep each stack's metrics JSONL and logs in this folder")
    parser.add_argument("--skip-stacks", action="store_true", help="only the teacher-scoring comparison")
    parser.add_argument("--world", choices=sorted(WORLDS), default="tiny", help="model + data of the stacks")
    parser.add_argument("--skip-scoring", action="store_true", help="only the stacks")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not args.skip_scoring:
        teacher_scoring(args.repeats)
    if not args.skip_stacks:
        stacks(args.steps, args.hold_window, args.lookahead, args.batch_decisions, args.keep, args.world)


if __name__ == "__main__":
    main()
