"""Export and evaluate every saved step of a training run (docs/evaluation.md, "From a run to the table").

``python -m recipe.atesd.evaluate_run RUN_DIR [--steps 20,40,...] [--config evaluate_paper] [--out runs/eval]
[--name NAME] [--method METHOD] [--seed SEED] [--keep-exports] [-- key=value ...]``

``RUN_DIR`` is what ``recipe.atesd.export`` takes (a ``trainer.default_local_dir`` or a folder with
``checkpoints/``). For each step (default: every saved ``global_step_N`` up to verl's tracker
``latest_checkpointed_iteration.txt``; a later one is still being written): export it
(``recipe/atesd/export.py``), run ``recipe.atesd.eval.evaluate`` with the named config (default
``evaluate_paper``; ``evaluate_toy`` for the toy world) and the trailing ``key=value`` overrides, then delete
the export unless ``--keep-exports``. Layout, one folder per run (``NAME``, default: the run's name)::

    OUT/NAME/run.json              {"name", "method", "seed", "source", "model", "config", "overrides"}
    OUT/NAME/step_N/               evaluate's output_dir: generations.jsonl, run_config.json, summary.{json,md}
    OUT/NAME/models/step_N/        the exported HF model while it is needed (or kept: --keep-exports)

Method and seed (what ``recipe.atesd.table`` groups by) come from ``--method`` / ``--seed``, else from the run's
name: the presets name runs ``<model>-<mode>-s<seed>`` (``recipe/atesd/config/experiment/_paper.yaml``), so
``qwen3-1.7b-atesd-s2`` is method ``qwen3-1.7b-atesd``, seed 2. A name without ``-s<seed>`` and no flags is an
error naming the flags; ``run.json`` is written once and a rerun with another method/seed/config is refused.
``model`` is the record of the model the run started from, as its entry point wrote it to the checkpoint root
(``model.json``, ``recipe/atesd/data/manifest.py``: path and model hash; null for a run that recorded none).

Resumable across steps: a step whose ``summary.json`` covers the requested ``n_samples`` and benchmarks is
skipped without exporting; any other step is exported (idempotent) and evaluated (``evaluate`` resumes its
own ``generations.jsonl``), so a killed job rerun with the same command loses at most the rows in flight.
``-- dry_run=true`` prints each step's resolved evaluation plan and exports, evaluates and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from recipe.atesd.data.manifest import read_run_model
from recipe.atesd.export import checkpoint_root, export_step, finished_steps

CONFIG_DIR = Path(__file__).resolve().parent / "config"
RUN_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)$")
LOG_PREFIX = "[evaluate_run]"


def run_name(run_dir: Path) -> str:
    """The run's name: its folder, or the folder above when that one is ``checkpoints`` (symlinks not followed:
    a link named after the experiment keeps that name)."""
    run_dir = Path(os.path.abspath(run_dir))
    return run_dir.parent.name if run_dir.name == "checkpoints" else run_dir.name


def method_and_seed(name: str, method: str | None, seed: int | None) -> tuple[str, int]:
    """``--method`` / ``--seed`` when given, else parsed from ``<method>-s<seed>`` (module docstring)."""
    m = RUN_NAME.match(name)
    if method is None and m:
        method = m.group("method")
    if seed is None and m:
        seed = int(m.group("seed"))
    if method is None or seed is None:
        raise ValueError(
            f"run '{name}': cannot tell its method and seed (the presets name runs <method>-s<seed>); "
            "pass --method and --seed"
        )
    return method, seed


def write_run_json(path: Path, record: dict) -> None:
    """First call writes ``record``; later calls must agree key by key (ValueError naming the key)."""
    if path.exists():
        previous = json.loads(path.read_text())
        for key in sorted(set(previous) | set(record)):
            if previous.get(key) != record.get(key):
                raise ValueError(
                    f"{path}: '{key}' was {previous.get(key)!r}, now {record.get(key)!r}; use another --out or --name"
                )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def compose(config: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config, overrides=overrides)


def step_done(step_dir: Path, cfg) -> bool:
    """True when ``step_dir/summary.json`` covers the config's ``n_samples`` and every benchmark."""
    path = step_dir / "summary.json"
    if not path.is_file():
        return False
    summary = json.loads(path.read_text())
    return summary.get("n_samples") == cfg.n_samples and set(summary.get("benchmarks", {})) == set(
        cfg.benchmarks
    )


def parse_steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ValueError(f"--steps must be comma-separated integers, got {text!r}") from err
    if not steps:
        raise ValueError("--steps is empty")
    return steps


def evaluate_run(
    run_dir: str | Path,
    out: str | Path = "runs/eval",
    steps: list[int] | None = None,
    config: str = "evaluate_paper",
    overrides: list[str] | None = None,
    name: str | None = None,
    method: str | None = None,
    seed: int | None = None,
    keep_exports: bool = False,
    dtype: str = "bfloat16",
) -> dict[int, dict]:
    """Evaluate the chosen steps of one run (module docstring); returns ``{step: summary}``."""
    from recipe.atesd.eval.evaluate import run as evaluate

    overrides = list(overrides or [])
    for key in ("model_path", "output_dir"):
        if any(o.lstrip("+~").startswith(f"{key}=") for o in overrides):
            raise ValueError(f"override {key}=... is set by evaluate_run per step; remove it")
    root = checkpoint_root(run_dir)
    name = name or run_name(Path(run_dir))
    method, seed = method_and_seed(name, method, seed)
    run_out = Path(out) / name
    record = {
        "name": name,
        "method": method,
        "seed": seed,
        "source": str(root.resolve()),
        "model": read_run_model(root),
        "config": config,
        "overrides": overrides,
    }
    chosen = steps or finished_steps(root)
    if not compose(config, ["model_path=-", "output_dir=-", *overrides]).dry_run:
        write_run_json(run_out / "run.json", record)
    summaries = {}
    for step in chosen:
        step_dir = run_out / f"step_{step}"
        model_dir = run_out / "models" / f"step_{step}"
        cfg = compose(config, [f"model_path={model_dir}", f"output_dir={step_dir}", *overrides])
        if cfg.dry_run:  # evaluate prints the plan; nothing is exported or written
            print(f"{LOG_PREFIX} {name} step {step}: dry run, model would be {model_dir}", flush=True)
            evaluate(cfg)
            continue
        if step_done(step_dir, cfg):
            print(
                f"{LOG_PREFIX} {name} step {step}: already evaluated ({step_dir / 'summary.json'})",
                flush=True,
            )
        else:
            exported = export_step(root, step, run_out / "models", dtype=dtype)
            print(
                f"{LOG_PREFIX} {name} step {step}: model {exported.out_dir}, evaluating -> {step_dir}",
                flush=True,
            )
            evaluate(cfg)
            if not keep_exports:
                shutil.rmtree(model_dir)
        summaries[step] = json.loads((step_dir / "summary.json").read_text())
        print(
            f"{LOG_PREFIX} {name} step {step}: mean Average@{cfg.n_samples} = {summaries[step]['mean']:.4f}"
        )
    return summaries


def main(argv: list[str] | None = None) -> dict[int, dict]:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.atesd.evaluate_run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir")
    parser.add_argument("--steps", help="comma-separated steps (default: every finished step)")
    parser.add_argument(
        "--config", default="evaluate_paper", help="evaluate config name (recipe/atesd/config/)"
    )
    parser.add_argument("--out", default="runs/eval", help="results go to OUT/NAME/step_N/")
    parser.add_argument("--name", help="run name (default: the run folder's name)")
    parser.add_argument("--method", help="method label for the table (default: from <method>-s<seed>)")
    parser.add_argument("--seed", type=int, help="seed label for the table (default: from <method>-s<seed>)")
    parser.add_argument("--keep-exports", action="store_true", help="keep OUT/NAME/models/step_N/")
    parser.add_argument(
        "--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="exported weights"
    )
    parser.epilog = "evaluate config overrides go after --: ... -- n_samples=4 engine.tensor_parallel_size=2"
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.overrides = argv[split + 1 :]
    return evaluate_run(
        args.run_dir,
        args.out,
        parse_steps(args.steps),
        args.config,
        args.overrides,
        args.name,
        args.method,
        args.seed,
        args.keep_exports,
        args.dtype,
    )


if __name__ == "__main__":
    main()
