"""Summarise an ATESD run from verl's file-logger JSONL: ``python -m recipe.atesd.tools.summarize METRICS [--ckpt DIR]``.

Prints the attempts that wrote the history (a resumed run appends to it, :mod:`recipe.atesd.tools.run_history`),
held-out accuracy per validation (verl's ``val-core/<data_source>/acc/mean@k`` rows, step 0 = before training),
α per hold window with the Beta policy's mean a/(a+b) at its decision, the controller's rewards and updates,
the distillation-loss trend and probe NLL, and where the latest checkpoint is.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from recipe.atesd.tools.run_history import Attempt, read_history


def read_metrics(path: str | Path) -> tuple[list[dict], list[Attempt]]:
    """Training rows (those with ``exposure/alpha``) of a metrics history, in step order, and its attempts.

    A step logged twice (a history written without boundaries by an interrupted and resumed run) is an error.
    """
    history = read_history(path)
    rows = [{"step": r["step"], **r["data"]} for r in history.records if "exposure/alpha" in r["data"]]
    if not rows:
        raise ValueError(f"{path}: no ATESD training rows (no 'exposure/alpha' metric)")
    steps = [r["step"] for r in rows]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ValueError(f"{path}: training steps {repeated} appear more than once")
    return sorted(rows, key=lambda r: r["step"]), history.attempts


def validations(path: str | Path) -> list[tuple[int, dict[str, float]]]:
    """(step, {metric: value}) of every record carrying ``val-core/...acc/mean@k`` metrics, in step order."""
    out = []
    for r in read_history(path).records:
        acc = {k: v for k, v in r["data"].items() if k.startswith("val-core/") and "/acc/mean@" in k}
        if acc:
            out.append((r["step"], acc))
    return sorted(out, key=lambda item: item[0])


def describe_attempts(attempts: list[Attempt]) -> list[str]:
    """One line per attempt: where it started, which steps of the one before it replaced or lost, and its model
    (hash and path, ``recipe/atesd/data/manifest.py``; "not recorded" in histories older than issue 26)."""
    lines = [f"history: {len(attempts)} attempt(s)"]
    for a in attempts:
        start = "fresh start" if a.resumed_from_step == 0 else f"resumed from step {a.resumed_from_step}"
        redo = f"; re-ran steps {a.dropped_steps} left by the interrupted attempt" if a.dropped_steps else ""
        if a.lost_steps:
            redo += f"; LOST steps {a.lost_steps} (checkpointed, never logged: no metrics)"
        if a.model is None:
            model = "model not recorded"
        else:
            model = (
                f"model {a.model['sha256'] or 'without hash (' + a.model['source'] + ')'} ({a.model['path']})"
            )
        lines.append(f"  attempt {a.number}: {start}{' at ' + a.started if a.started else ''}{redo}; {model}")
    return lines


def windows(rows: list[dict]) -> list[tuple[int, float, list[int]]]:
    """(window id, α, steps) for each hold window seen."""
    out: dict[int, tuple[float, list[int]]] = {}
    for r in rows:
        alpha, steps = out.setdefault(int(r["exposure/window"]), (r["exposure/alpha"], []))
        steps.append(r["step"])
    return [(w, a, s) for w, (a, s) in sorted(out.items())]


def beta_mean(row: dict) -> float | None:
    """a / (a + b) of the Beta policy logged on ``row``; None outside ``adaptive`` (NaN or absent)."""
    a, b = row.get("exposure/beta_a"), row.get("exposure/beta_b")
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / (a + b)


def summary(
    rows: list[dict],
    ckpt_dir: str | None = None,
    attempts: list[Attempt] | None = None,
    validation: list[tuple[int, dict[str, float]]] | None = None,
) -> str:
    lines = describe_attempts(attempts or [Attempt(1, 0)])
    for step, acc in validation or []:
        lines.append(
            f"held-out accuracy at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(acc.items()))
        )
    lines.append("α per hold window (Beta mean a/(a+b) of the policy at its decision):")
    first_step = {r["step"]: r for r in rows}
    for w, alpha, steps in windows(rows):
        mean = beta_mean(first_step[steps[0]])
        policy = f"  Beta mean {mean:.3f}" if mean is not None else ""
        lines.append(f"  window {w:3d}  α={alpha:.3f}{policy}  steps {steps[0]}–{steps[-1]}")
    rewards = [(r["step"], r["controller/reward"]) for r in rows if "controller/reward" in r]
    lines.append(
        "controller rewards (step: R): " + (", ".join(f"{s}: {v:.4g}" for s, v in rewards) or "none yet")
    )
    updates = [r["step"] for r in rows if "controller/loss" in r]
    lines.append(f"controller updates at steps: {updates or 'none'}")
    loss = [r["distill/loss"] for r in rows if math.isfinite(r.get("distill/loss", math.nan))]
    if loss:
        lines.append(
            f"distill/loss: first {loss[0]:.4g} → last {loss[-1]:.4g} (min {min(loss):.4g}, {len(loss)} steps)"
        )
    nll = [r["probe/nll"] for r in rows if "probe/nll" in r]
    if nll:
        lines.append(f"probe/nll: first {nll[0]:.4g} → last {nll[-1]:.4g}")
    if ckpt_dir:
        lines.append(f"latest checkpoint: {latest_checkpoint(ckpt_dir)}")
    return "\n".join(lines)


TRACKER = "latest_checkpointed_iteration.txt"  # verl's checkpoint tracker: names the last complete step


def latest_checkpoint(ckpt_dir: str | Path) -> str:
    """``<ckpt_dir>/global_step_<n>`` named by verl's ``latest_checkpointed_iteration.txt``, else "none written"."""
    latest = Path(ckpt_dir) / TRACKER
    return f"{ckpt_dir}/global_step_{latest.read_text().strip()}" if latest.exists() else "none written"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics", help="verl file-logger JSONL")
    parser.add_argument("--ckpt", help="trainer.default_local_dir of the run")
    args = parser.parse_args()
    rows, attempts = read_metrics(args.metrics)
    print(summary(rows, args.ckpt, attempts, validations(args.metrics)))


if __name__ == "__main__":
    main()
