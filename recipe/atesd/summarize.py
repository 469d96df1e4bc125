"""Summarise an ATESD run from verl's file-logger JSONL: ``python -m recipe.atesd.summarize METRICS [--ckpt DIR]``.

Prints α per hold window, the controller's rewards and updates, the distillation-loss trend and
probe NLL, and where the latest checkpoint is.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """Training rows (those with ``exposure/alpha``) of a verl file-logger JSONL, in step order."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON ({err})") from err
        if "exposure/alpha" in record.get("data", {}):
            rows.append({"step": record["step"], **record["data"]})
    if not rows:
        raise ValueError(f"{path}: no ATESD training rows (no 'exposure/alpha' metric)")
    return sorted(rows, key=lambda r: r["step"])


def windows(rows: list[dict]) -> list[tuple[int, float, list[int]]]:
    """(window id, α, steps) for each hold window seen."""
    out: dict[int, tuple[float, list[int]]] = {}
    for r in rows:
        alpha, steps = out.setdefault(int(r["exposure/window"]), (r["exposure/alpha"], []))
        steps.append(r["step"])
    return [(w, a, s) for w, (a, s) in sorted(out.items())]


def summary(rows: list[dict], ckpt_dir: str | None = None) -> str:
    lines = ["α per hold window:"]
    for w, alpha, steps in windows(rows):
        lines.append(f"  window {w:3d}  α={alpha:.3f}  steps {steps[0]}–{steps[-1]}")
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
        latest = Path(ckpt_dir) / "latest_checkpointed_iteration.txt"
        where = f"{ckpt_dir}/global_step_{latest.read_text().strip()}" if latest.exists() else "none written"
        lines.append(f"latest checkpoint: {where}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics", help="verl file-logger JSONL")
    parser.add_argument("--ckpt", help="trainer.default_local_dir of the run")
    args = parser.parse_args()
    print(summary(read_metrics(args.metrics), args.ckpt))


if __name__ == "__main__":
    main()
