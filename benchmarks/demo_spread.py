"""Run-to-run spread of ``make demo``: the same demo with several seeds, held-out accuracy before and after.

``python benchmarks/demo_spread.py [--seeds 0 1 2] [--out outputs/demo-spread]``

Each seed s runs ``make demo DEMO_DIR=<out>/seed<s> DEMO_EXTRA="controller_seed=s data.seed=s
actor_rollout_ref.rollout.seed=s"`` (sequentially: one stack at a time); a finished seed is not rerun (the
entry point finds its last checkpoint). Prints one row per seed (validation at step 0 and at the last step,
from verl's ``val-core/toy_sum/acc/mean@1``; ``recipe/atesd/tools/summarize.py``'s ``validations``) and the
mean gain with its standard deviation over seeds. Every run made is printed; none is dropped.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atesd import REPO_ROOT  # noqa: E402 - after the path fix above
from recipe.atesd.tools.summarize import validations  # noqa: E402

KEY = "val-core/toy_sum/acc/mean@1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="outputs/demo-spread")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        run = Path(args.out) / f"seed{seed}"
        extra = f"controller_seed={seed} data.seed={seed} actor_rollout_ref.rollout.seed={seed}"
        subprocess.run(["make", "demo", f"DEMO_DIR={run}", f"DEMO_EXTRA={extra}"], cwd=REPO_ROOT, check=True)
        vals = validations(REPO_ROOT / run / "metrics.jsonl")
        (first_step, first), (last_step, last) = vals[0], vals[-1]
        rows.append((seed, first_step, first[KEY], last_step, last[KEY]))
    print(f"{'seed':>4}  {'step':>4} {'before':>7}  {'step':>4} {'after':>7}  {'gain':>7}")
    for seed, s0, before, s1, after in rows:
        print(f"{seed:>4}  {s0:>4} {before:7.4f}  {s1:>4} {after:7.4f}  {after - before:+7.4f}")
    gains = [after - before for *_, before, _, after in rows]
    afters = [after for *_, after in rows]
    spread = statistics.stdev(afters) if len(afters) > 1 else float("nan")
    print(
        f"mean gain {statistics.mean(gains):+.4f}; after-accuracy std over seeds {spread:.4f} ({len(rows)} runs)"
    )


if __name__ == "__main__":
    main()
