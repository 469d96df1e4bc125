"""The toy-world reproduction sweep (issue 13): ``python -m recipe.atesd.tools.repro_sweep [options]``.

Runs the real recipe for every (method, seed) asked, one stack at a time: per seed, every ATESD method as an arm
of one sweep stack (recipe/atesd/glue/sweep.py: the stack put back to its start between arms, so an arm trains
exactly what its run alone would), then GRPO as a stack of its own. ``--plan`` picks the table of methods
(recipe/atesd/tools/sweep_plans.py): ``repro`` (below, the default) or ``study`` (``STUDY_METHODS``: the toy-world
study of issue 30, docs/toy-study.md, with the recipe's controller defaults). The reproduction's methods:

- ``fixed-0`` … ``fixed-1``: ``recipe.atesd.main_atesd controller.exposure_mode=fixed controller.alpha=α``
  (α ∈ {0, 0.25, 0.5, 0.75, 1}; α = 1 is OPSD), ``random`` (α ~ U[α_min, α_max] per hold window) and
  ``adaptive`` (ATESD), all with the demo's controller settings (sweep_plans ``CONTROLLER``, the ``make demo``
  overrides of the Makefile: H = 2, L = 3, B = 2, so a 40-step run makes 20 decisions);
- ``adaptive_per_difficulty``: ATESD with one α per difficulty bucket (sweep_plans ``PER_DIFFICULTY``: K = 3
  quantile buckets of the toy world's ``extra_info.difficulty``, docs/method.md §2.4; issue 14);
- ``grpo``: verl's GRPO, ``recipe.atesd.main_grpo`` (recipe/atesd/config/grpo_trainer.yaml), the RL baseline.

Every run gets the world (``+world=toy``, recipe/atesd/config/world/toy.yaml), the same step budget, and
for seed s ``data.seed=s actor_rollout_ref.rollout.seed=s`` (+ ``controller_seed=s`` for ATESD), as
benchmarks/demo_spread.py does: for one seed every method sees the same data order. Held-out accuracy is
validated before training, every ``--test-freq`` steps and at the last step (greedy, mean@1 on
data/toy/val.parquet), and verl dumps each validation's generations (``trainer.validation_data_dir``) so the
report can split accuracy by difficulty. A checkpoint is saved at the last step only.

Every run starts from ``--model`` (default ``artifacts/toy-qwen3``, where ``make toy`` installs the shipped
model), passed as ``actor_rollout_ref.model.path``; its hash (``recipe/atesd/data/manifest.py::model_record``)
is taken once before the sweep and recorded in each ``run.json``.

Run directory ``<root>/<method>/seed<s>/`` (recipe/atesd/tools/run_dirs.py): ``run.json`` (written first: method,
seed, the command that trains it alone, the sweep stack's command, the model), ``metrics.jsonl``,
``checkpoints/``, ``val_generations/<step>.jsonl``, a sweep arm's ``config.yaml`` and ``record.json`` (config hash,
code commit, CPU) and ``done.json`` (written last, atomically, by the trainer for an arm, by this driver for
GRPO: wall time, start/end times); GRPO's output goes to its ``train.log``, a stack's to
``<root>/stacks/seed<s>-<UTC time>.log`` beside its record (``.json``: command, arms, exit status, wall time).
Resumability (:func:`run_state`):

- ``done.json`` present → the run is finished and skipped, provided ``run.json`` names the same command
  (same overrides, so the same budget) and the same model hash; a different command or model (or none
  recorded) is an error naming the run and both, never a silent reuse;
- a directory without ``done.json`` (killed, crashed, or failed) is **restarted from scratch**: it is moved
  aside to ``<root>/<method>/seed<s>.incomplete-<UTC time>/`` (kept, listed by the report, never read as a
  result) and the run starts fresh. Checkpoints are written at the last step only, so there is nothing to
  resume from; a seed's stack trains only its unfinished arms.

A failed run (non-zero exit, or no checkpoint / validation at the last step) does not stop the sweep; the
failures are listed at the end and the exit status is 1. The end also prints the benchmark of issue 28
(:func:`overhead_lines`): each run's wall time and share outside training steps, each stack's start-up and
shutdown, and ``overhead share: X`` over everything this invocation ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from recipe.atesd import REPO_ROOT
from recipe.atesd.data.manifest import code_state, cpu_model, model_record
from recipe.atesd.tools.run_dirs import (
    CHECKPOINTS,
    DONE,
    GENERATIONS,
    LOG,
    METRICS,
    RECORD,
    RUN,
    STACKS,
    move_aside,
    write_json,
)
from recipe.atesd.tools.run_history import read_history
from recipe.atesd.tools.summarize import TRACKER, validations
from recipe.atesd.tools.sweep_plans import PLANS, REPRO, Plan, select_methods


def run_dir(root: str | Path, method: str, seed: int) -> Path:
    return Path(root) / method / f"seed{seed}"


def _budget(steps: int, test_freq: int) -> list[str]:
    """The same for every run: steps, checkpoint at the last, validation at 0, every ``test_freq`` and the last."""
    return [
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=100",  # GRPO's config says 1 (125 steps of the toy world); ATESD's says 100
        f"trainer.save_freq={steps}",
        f"trainer.test_freq={test_freq}",
        "trainer.val_before_train=true",
        "trainer.resume_mode=disable",
    ]


def overrides(
    method: str,
    seed: int,
    steps: int,
    test_freq: int,
    directory: Path,
    world: str,
    extra: list[str],
    model: Path,
    plan: Plan = REPRO,
) -> list[str]:
    """The hydra overrides of one run (``directory`` and ``model`` absolute: the entry points run from the
    repository root)."""
    m = plan.methods[method]
    seeds = [f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}"]
    if m.mode != "grpo":
        seeds.append(f"controller_seed={seed}")
    return [
        f"+world={world}",
        *m.overrides(),
        *seeds,
        *_budget(steps, test_freq),
        f"trainer.experiment_name=repro-{method}-seed{seed}",
        f"trainer.default_local_dir={directory / CHECKPOINTS}",
        f"trainer.validation_data_dir={directory / GENERATIONS}",
        f"actor_rollout_ref.model.path={model}",
        *extra,
    ]


def arm_keys(method: str, plan: Plan = REPRO) -> dict:
    """The keys of ``method`` as a sweep arm (recipe/atesd/glue/sweep.py): its overrides, nested, values read as
    YAML (as hydra reads them)."""
    nested: dict = {}
    for item in plan.methods[method].overrides():
        key, value = item.split("=", 1)
        *path, name = key.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[name] = yaml.safe_load(value)
    return nested


def hydra_literal(value) -> str:
    """``value`` (nested dicts of numbers, booleans and strings) in hydra's override grammar."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"hydra_literal: cannot write a {type(value).__name__}")


def stack_overrides(
    methods: list[str],
    seed: int,
    steps: int,
    test_freq: int,
    root: Path,
    world: str,
    extra: list[str],
    model: Path,
    plan: Plan = REPRO,
) -> list[str]:
    """The hydra overrides of one stack training every ATESD method of ``seed`` as an arm of a sweep
    (recipe/atesd/glue/sweep.py): the keys :func:`overrides` gives every method of the seed, once, and each
    method's own keys as its arm; arm ``m``'s outputs go to :func:`run_dir` ``(root, m, seed)``. An ``extra``
    override of a key an arm sets is refused (in a sweep the arm's value would win, alone the extra one)."""
    arms = {m: arm_keys(m, plan) for m in methods}
    armed = {o.split("=", 1)[0] for m in methods for o in plan.methods[m].overrides()}
    clash = [o for o in extra if o.split("=", 1)[0].lstrip("+~") in armed]
    if clash:
        raise ValueError(f"--extra {clash}: a key the methods set themselves")
    return [
        f"+world={world}",
        f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"controller_seed={seed}",
        *_budget(steps, test_freq),
        f"trainer.experiment_name=repro-seed{seed}",
        f"actor_rollout_ref.model.path={model}",
        f"sweep.root={root}",
        f"sweep.subdir=seed{seed}",
        f"++sweep.arms={hydra_literal(arms)}",
        *extra,
    ]


def command(
    method: str, run_overrides: list[str], python: str = sys.executable, plan: Plan = REPRO
) -> list[str]:
    return [python, "-m", plan.methods[method].entry, *run_overrides]


def run_state(directory: Path, cmd: list[str], model: dict | None = None) -> str:
    """``"absent"``, ``"done"`` (``done.json`` written and ``run.json`` names ``cmd`` past the interpreter and,
    given ``model``, the same model hash) or ``"incomplete"``; a finished run made with another command or
    another model is a ValueError naming both."""
    if not directory.exists():
        return "absent"
    if not (directory / DONE).exists():
        return "incomplete"
    meta = json.loads((directory / RUN).read_text(encoding="utf-8"))
    recorded = meta["command"]
    if model is not None and (meta.get("model") or {}).get("sha256") != model["sha256"]:
        raise ValueError(
            f"{directory} was finished with another model: {(meta.get('model') or {}).get('sha256') or '(not recorded)'}"
            f", not {model['sha256']} ({model['path']}): use another --root, or move it away"
        )
    if recorded[1:] != cmd[1:]:
        raise ValueError(
            f"{directory} was finished with another command:\n  {' '.join(recorded[1:])}\nnot\n  "
            f"{' '.join(cmd[1:])}\n(another step budget or overrides): use another --root, or move it away"
        )
    return "done"


def finished(directory: Path, steps: int) -> str | None:
    """None when the run reached ``steps``: verl's checkpoint tracker names it and the metrics history holds
    a validation at that step; else the reason it did not."""
    tracker = directory / CHECKPOINTS / TRACKER
    if not tracker.exists() or tracker.read_text().strip() != str(steps):
        return f"no checkpoint at step {steps} ({tracker})"
    metrics = directory / METRICS
    if not metrics.exists():
        return f"no metrics history ({metrics})"
    if steps not in [step for step, _ in validations(metrics)]:
        return f"no validation logged at step {steps} in {metrics}"
    return None


def execute(cmd: list[str], directory: Path | None, log: Path) -> int:
    """Run ``cmd`` from the repository root, its output appended to ``log`` and echoed to stdout; with a
    ``directory``, the file logger writes ``directory/metrics.jsonl`` (a sweep stack's arms name their own).
    Returns the exit status."""
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    if directory is not None:
        env["VERL_FILE_LOGGER_PATH"] = str(directory / METRICS)
    with log.open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            out.write(line)
            sys.stdout.write(line)
        return proc.wait()


def run_stack(
    seed: int,
    arms: list[tuple[str, list[str], Path]],
    stack_cmd: list[str],
    steps: int,
    root: Path,
    runner=execute,
    model: dict | None = None,
) -> tuple[list[tuple[str, str]], dict]:
    """Train ``arms`` ((method, its command alone, its directory), none finished) in one sweep stack
    ``stack_cmd``; ((outcome, detail) per arm, the stack's record). Each arm's ``run.json`` names the command
    that trains it alone (what :func:`run_state` compares) and the stack; the trainer writes its ``done.json``
    (recipe/atesd/glue/sweep.py). The stack's output and record go to ``<root>/stacks/seed<s>-<UTC time>.*``."""
    for method, cmd, directory in arms:
        directory.mkdir(parents=True)
        write_json(
            directory / RUN,
            {
                "method": method,
                "seed": seed,
                "steps": steps,
                "command": cmd,
                "stack": stack_cmd,
                "model": model,
            },
        )
    stacks = root / STACKS
    stacks.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    name = f"seed{seed}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    t0 = time.monotonic()
    rc = runner(stack_cmd, None, stacks / f"{name}.log")
    record = {
        "seed": seed,
        "arms": [method for method, _, _ in arms],
        "command": stack_cmd,
        "exit_status": rc,
        "wall_s": time.monotonic() - t0,
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
    }
    write_json(stacks / f"{name}.json", record)
    outcomes = []
    for _, _, directory in arms:
        why = None if (directory / DONE).exists() else f"no {DONE} (stack exit status {rc})"
        why = why or finished(directory, steps)
        if why:
            outcomes.append(("failed", f"{directory}: {why} (log: {stacks / f'{name}.log'})"))
        else:
            wall = json.loads((directory / DONE).read_text(encoding="utf-8"))["wall_s"]
            outcomes.append(("done", f"{directory}: {wall:.0f} s in stack {name}"))
    return outcomes, record


def steps_seconds(directory: Path) -> float:
    """Σ ``timing_s/step`` over a run's metrics history: its time in training steps."""
    path = directory / METRICS
    if not path.exists():
        return 0.0
    return sum(r["data"].get("timing_s/step", 0.0) for r in read_history(path).records)


def overhead_lines(
    stacks: list[tuple[dict, list[Path]]], runs: list[tuple[str, Path, float, bool]]
) -> list[str]:
    """The benchmark of issue 28, from what this invocation ran: per run its wall time and its share outside
    training steps; per stack its start-up (command → first arm's reset) and shutdown (last arm → exit); and
    ``overhead share: X`` = 1 − Σ steps / Σ wall, the wall being every stack's and every separate run's.

    ``stacks``: (record of :func:`run_stack`, its arms' directories); ``runs``: (label, directory, wall s, in a
    stack) of each finished run — an arm's wall runs from its reset to its last validation, a separate run's from
    command to exit. A run's steps: Σ ``timing_s/step`` of its metrics history."""
    lines, steps_total = [], 0.0
    for label, directory, wall, _ in runs:
        steps = steps_seconds(directory)
        steps_total += steps
        lines.append(
            f"[repro] {label}: wall {wall:.0f} s, steps {steps:.0f} s, outside steps {1 - steps / wall:.2f}"
        )
    for record, directories in stacks:
        done = [
            json.loads((d / DONE).read_text(encoding="utf-8")) for d in directories if (d / DONE).exists()
        ]
        start, end = (datetime.fromisoformat(record[k]) for k in ("started", "finished"))
        if done:
            first = min(datetime.fromisoformat(a["started"]) for a in done)
            last = max(datetime.fromisoformat(a["finished"]) for a in done)
            edges = f"start-up {(first - start).total_seconds():.0f} s, shutdown {(end - last).total_seconds():.0f} s"
        else:
            edges = "no arm finished"
        lines.append(
            f"[repro] stack seed {record['seed']}: {len(record['arms'])} arms, wall {record['wall_s']:.0f} s, {edges}"
        )
    wall_total = sum(r["wall_s"] for r, _ in stacks) + sum(w for _, _, w, in_stack in runs if not in_stack)
    if wall_total > 0:
        lines.append(
            f"[repro] overhead share: {1 - steps_total / wall_total:.2f} (outside training steps, of "
            f"{wall_total:.0f} s of wall time)"
        )
    return lines


def run_one(
    method: str,
    seed: int,
    cmd: list[str],
    directory: Path,
    steps: int,
    runner=execute,
    model: dict | None = None,
) -> tuple[str, str]:
    """Skip a finished run, restart an incomplete one, else run it; (outcome, detail) with outcome one of
    ``skipped``, ``done``, ``failed``. ``runner(cmd, directory, log) -> exit status`` runs the stack;
    ``model`` (``recipe/atesd/data/manifest.py::model_record``) goes into ``run.json``."""
    state = run_state(directory, cmd, model)
    if state == "done":
        return "skipped", f"{directory}: finished earlier"
    detail = ""
    if state == "incomplete":
        detail = f"incomplete earlier attempt moved to {move_aside(directory)}; "
    directory.mkdir(parents=True)
    started = datetime.now(UTC)
    write_json(
        directory / RUN, {"method": method, "seed": seed, "steps": steps, "command": cmd, "model": model}
    )
    # what a sweep arm's record.json holds (recipe/atesd/glue/sweep.py::arm_record) but the resolved config's
    # hash: a run trained alone is named by its command's (recipe/atesd/tools/repro_rows.py::command_sha256)
    record = {"model": model, **code_state(), "cpu": cpu_model(), "started": started.isoformat()}
    write_json(directory / RECORD, record)
    t0 = time.monotonic()
    rc = runner(cmd, directory, directory / LOG)
    wall = time.monotonic() - t0
    why = f"exit status {rc}" if rc != 0 else finished(directory, steps)
    if why:
        return "failed", f"{detail}{directory}: {why} (log: {directory / LOG})"
    done = {"wall_s": wall, "started": started.isoformat(), "finished": datetime.now(UTC).isoformat()}
    write_json(directory / DONE, done)
    return "done", f"{detail}{directory}: {wall:.0f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="runs/toy-repro", help="runs go to <root>/<method>/seed<s>/")
    parser.add_argument(
        "--plan",
        default="repro",
        choices=sorted(PLANS),
        help="the methods table: repro (issue 13) or study (issue 30, docs/toy-study.md)",
    )
    parser.add_argument(
        "--steps", type=int, default=40, help="training steps per run (the same for every run)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="a part of the plan's seeds, or others (default: the plan's seeds)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["all"],
        help="names or groups of the plan ("
        + "; ".join(f"{name}: {', '.join([*p.groups, *p.methods])}" for name, p in PLANS.items())
        + ")",
    )
    parser.add_argument(
        "--test-freq", type=int, default=10, help="validate every N steps (and at 0 and the end)"
    )
    parser.add_argument("--world", default="toy", help="the +world=<name> config group")
    parser.add_argument(
        "--model",
        default="artifacts/toy-qwen3",
        help="the model every run starts from (where `make toy` installs the shipped one); its hash goes "
        "into each run.json",
    )
    parser.add_argument("--extra", nargs="*", default=[], help="hydra overrides appended to every run")
    parser.add_argument("--dry-run", action="store_true", help="print each run's state and command only")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.test_freq < 1:
        parser.error("--steps and --test-freq must be >= 1")
    plan_table = PLANS[args.plan]
    args.seeds = list(plan_table.seeds) if args.seeds is None else args.seeds
    try:
        methods = select_methods(args.methods, plan_table)
    except ValueError as err:
        parser.error(str(err))
    root = (REPO_ROOT / args.root).resolve()
    model_path = (REPO_ROOT / args.model).resolve()
    model = model_record(model_path)
    if model["sha256"] is None:
        parser.error(
            f"--model {model_path}: no model hash ({model['source']}); `make toy` installs the toy model"
        )
    print(f"[repro] model {model['sha256']} ({model['path']}, {model['source']})")
    stacked = [m for m in methods if plan_table.methods[m].mode != "grpo"]  # one sweep stack per seed
    separate = [m for m in methods if plan_table.methods[m].mode == "grpo"]
    plan = {}  # seed -> method -> (its command alone, its directory)
    for seed in args.seeds:  # seed-major: a partial sweep still covers every method for the first seeds
        for method in methods:
            directory = run_dir(root, method, seed)
            run_overrides = overrides(
                method,
                seed,
                args.steps,
                args.test_freq,
                directory,
                args.world,
                args.extra,
                model_path,
                plan_table,
            )
            cmd = command(method, run_overrides, plan=plan_table)
            plan.setdefault(seed, {})[method] = (cmd, directory)

    def stack_command(seed: int, arms: list[str]) -> list[str]:
        stack = stack_overrides(
            arms, seed, args.steps, args.test_freq, root, args.world, args.extra, model_path, plan_table
        )
        return [sys.executable, "-m", plan_table.methods[arms[0]].entry, *stack]

    n_runs = len(methods) * len(args.seeds)
    print(
        f"[repro] {n_runs} runs ({len(methods)} methods × seeds {args.seeds}), {args.steps} steps each; "
        f"per seed, {len(stacked)} in one sweep stack"
    )
    if args.dry_run:
        for seed, runs in plan.items():
            for method, (cmd, directory) in runs.items():
                print(f"{method} seed {seed}: {run_state(directory, cmd, model)}\n  {' '.join(cmd[1:])}")
            if stacked:
                print(f"stack seed {seed}:\n  {' '.join(stack_command(seed, stacked)[1:])}")
        return
    outcomes, stacks, timed = [], [], []
    for seed, runs in plan.items():
        pending = []
        for method in stacked:
            cmd, directory = runs[method]
            state = run_state(directory, cmd, model)
            if state == "done":
                outcomes.append(("skipped", f"{directory}: finished earlier"))
                continue
            if state == "incomplete":
                print(
                    f"[repro] {method} seed {seed}: incomplete earlier attempt moved to {move_aside(directory)}"
                )
            pending.append((method, cmd, directory))
        if pending:
            arms = [m for m, _, _ in pending]
            print(f"[repro] stack seed {seed}: arms {', '.join(arms)}", flush=True)
            results, record = run_stack(
                seed, pending, stack_command(seed, arms), args.steps, root, model=model
            )
            stacks.append((record, [d for _, _, d in pending]))
            for (method, _, directory), (outcome, detail) in zip(pending, results, strict=True):
                print(f"[repro] {outcome}: {detail}", flush=True)
                outcomes.append((outcome, detail))
                if outcome == "done":
                    wall = json.loads((directory / DONE).read_text(encoding="utf-8"))["wall_s"]
                    timed.append((f"{method} seed {seed}", directory, wall, True))
        for method in separate:
            cmd, directory = runs[method]
            print(f"[repro] run: {method} seed {seed}", flush=True)
            outcome, detail = run_one(method, seed, cmd, directory, args.steps, model=model)
            print(f"[repro] {outcome}: {detail}", flush=True)
            outcomes.append((outcome, detail))
            if outcome == "done":
                wall = json.loads((directory / DONE).read_text(encoding="utf-8"))["wall_s"]
                timed.append((f"{method} seed {seed}", directory, wall, False))
    for line in overhead_lines(stacks, timed):
        print(line)
    failed = [d for o, d in outcomes if o == "failed"]
    counts = {o: sum(1 for x, _ in outcomes if x == o) for o in ("done", "skipped", "failed")}
    print(
        f"[repro] {counts['done']} ran, {counts['skipped']} skipped (finished earlier), {counts['failed']} failed"
    )
    for d in failed:
        print(f"[repro] FAILED {d}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
