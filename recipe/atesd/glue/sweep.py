"""Sweep mode: several arms of one study trained one after another in one stack (docs/toy.md, "Sweep mode").

Starting a verl + vLLM stack costs ~85 s on the toy world here (Ray, the task runner, the worker group, the vLLM
server and its engine, the agent-loop and reward workers: docs/toy.md, "Where a run's time goes"), against ~1 s a
training step. With ``sweep.arms`` set, ``recipe.atesd.main_atesd`` starts the stack once and trains each arm in
turn; before an arm, :class:`recipe.atesd.glue.trainer.ATESDTrainer` puts back everything a fresh run would have:

- the actor's weights, optimiser and learning-rate schedule and the workers' RNG: verl's own checkpoint of the
  actor, saved once right after the stack started (:func:`initial_state_dir`) and loaded like a resume;
- the rollout engine's weights (and its prefix cache, which verl drops at every weight update): verl's weight
  sync, as at a run's start;
- the data order: the training dataloader's state before its first batch (its sampler's generator, seeded by
  ``data.seed``), loaded as verl loads it on resume;
- the controller and its RNG: a new controller from the arm's ``controller`` and ``controller_seed``, in the
  stack's one controller actor;
- the teacher's settings (``teacher_prompt``, ``distill``): sent to the workers again;
- the metrics history, checkpoints and validation generations: the arm's own folder (:func:`arm_dir`).

What an arm may set is therefore limited to what is read after the stack is built (:data:`ARM_SECTIONS`);
everything else (model, optimiser, batch, steps, seeds of data and rollouts, teacher kind, probe) is the stack's
and the same for every arm, which is what a paired comparison wants. A teacher kind whose weights move during
training in a copy of its own (``ema``) is refused: only the actor is put back. Test: tests/test_pairing_cpu_e2e.py (an arm run in a
sweep equals the same arm run alone).

Each arm's folder holds ``config.yaml`` (its resolved training config), ``record.json`` (:func:`arm_record`:
config hash, model, code commit, CPU) and, once trained, ``done.json`` (:func:`done_record`: wall time split).
A sweep started again skips the arms with ``done.json`` (same config hash; another is an error naming the arm) and
moves an arm folder that holds outputs but no ``done.json`` aside (``<name>.incomplete-<UTC time>``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from recipe.atesd.data.manifest import code_state, cpu_model
from recipe.atesd.glue.config_check import uses_lora
from recipe.atesd.method.teacher import teacher_kind, teacher_weights
from recipe.atesd.tools.run_dirs import (
    CHECKPOINTS,
    CONFIG,
    DONE,
    GENERATIONS,
    INITIAL_STATE,
    METRICS,
    RECORD,
)

ARM_SECTIONS = ("controller", "controller_seed", "teacher_prompt", "distill")
# the arm's folder and name, set by the sweep itself: not part of what the arm trains
PLACE_KEYS = (
    "trainer.default_local_dir",
    "trainer.validation_data_dir",
    "trainer.experiment_name",
    "actor_rollout_ref.rollout.trace.experiment_name",  # verl's ${trainer.experiment_name}
)
OUTPUTS = (METRICS, CHECKPOINTS, GENERATIONS, CONFIG, RECORD)  # what makes a folder an (incomplete) attempt
_MISSING = object()
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Arm:
    name: str
    directory: Path
    config: DictConfig  # the base config with the arm's keys and its places
    sha256: str  # config_sha256 of config


def leaves(node, prefix: str = "") -> list[str]:
    """The dotted keys of every leaf of a (nested) mapping."""
    if not isinstance(node, dict):
        return [prefix]
    out = []
    for key, value in node.items():
        out += leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def config_sha256(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config as canonical JSON, without ``sweep`` and :data:`PLACE_KEYS`: two arms
    with the same hash trained the same thing, wherever their outputs went."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("sweep", None)
    for key in PLACE_KEYS:
        *path, name = key.split(".")
        node = data
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(name, None)
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def arm_dir(root: str | Path, name: str, subdir: str = "") -> Path:
    """``<sweep.root>/<arm>[/<sweep.subdir>]``."""
    directory = Path(root) / name
    return directory / subdir if subdir else directory


def resolve_arms(cfg: DictConfig) -> list[Arm]:
    """The arms of ``cfg.sweep`` (none: ``[]``, a single run), each checked: a valid name, keys only under
    :data:`ARM_SECTIONS` that exist in the config, a teacher kind whose weights stay put. ValueError names the
    arm and the key."""
    sweep = cfg.get("sweep")
    arms = OmegaConf.to_container(sweep.arms, resolve=True) if sweep is not None and sweep.arms else {}
    if not arms:
        return []
    if not sweep.root:
        raise ValueError("sweep.arms is set but sweep.root is not: the folder the arms' outputs go to")
    kind = cfg.teacher.kind
    if (
        teacher_kind(kind).moves
        and teacher_weights(kind, uses_lora(cfg.actor_rollout_ref.model)) == "reference"
    ):
        raise ValueError(
            f"sweep: teacher.kind={kind} moves a copy of the weights beside the actor during an arm, and a sweep "
            "puts back only the actor between arms: run each arm as its own stack"
        )
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "sweep"])
    OmegaConf.set_struct(base, True)
    out = []
    for name, overrides in arms.items():
        if not ARM_NAME.match(str(name)):
            raise ValueError(
                f"sweep.arms.{name}: an arm name is letters, digits, '_', '.', '-' (a folder name)"
            )
        keys = leaves(overrides or {})
        if not keys or keys == [""]:
            raise ValueError(
                f"sweep.arms.{name}: no keys (an arm sets at least one key, e.g. controller.alpha)"
            )
        for key in keys:
            if key.split(".")[0] in ARM_SECTIONS and OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
                raise ValueError(f"sweep.arms.{name}.{key}: {key} is not a key of the config (a typo?)")
            if key.split(".")[0] not in ARM_SECTIONS:
                raise ValueError(
                    f"sweep.arms.{name}.{key}: an arm may set only keys under {', '.join(ARM_SECTIONS)}; this one is "
                    "read while the stack is built, so it is the same for every arm (run another stack for another "
                    "value)"
                )
        arm = OmegaConf.merge(base, OmegaConf.create(overrides))
        directory = arm_dir(sweep.root, name, sweep.subdir)
        with open_dict(arm):
            arm.trainer.default_local_dir = str(directory / CHECKPOINTS)
            arm.trainer.validation_data_dir = str(directory / GENERATIONS)
            arm.trainer.experiment_name = f"{cfg.trainer.experiment_name}-{name}"
        out.append(Arm(str(name), directory, arm, config_sha256(arm)))
    return out


def prepare(cfg: DictConfig) -> list[Arm]:
    """The entry point's check of a sweep, before anything starts: the arms (:func:`resolve_arms`); with arms,
    the stack itself starts fresh from its checkpoint root :func:`initial_state_dir`, which holds the state every
    arm starts from, and ``trainer.resume_mode=resume_path`` is refused (a sweep resumes by arm)."""
    arms = resolve_arms(cfg)
    if arms:
        if cfg.trainer.resume_mode == "resume_path":
            raise ValueError(
                "sweep: trainer.resume_mode=resume_path: a sweep starts every arm from the stack's start and resumes "
                "by skipping the arms already trained (sweep.root); drop resume_path"
            )
        with open_dict(cfg):
            cfg.trainer.default_local_dir = str(initial_state_dir(cfg))
    return arms


def initial_state_dir(cfg: DictConfig) -> Path:
    """``<sweep.root>/initial_state[/<sweep.subdir>]``: the stack's checkpoint root, where the actor's state at the
    stack's start is saved (``actor/``) for every arm to start from."""
    return arm_dir(cfg.sweep.root, INITIAL_STATE, cfg.sweep.subdir)


def arm_state(arm: Arm) -> str:
    """``"done"`` (``done.json`` with this arm's config hash), ``"incomplete"`` (outputs but no ``done.json``)
    or ``"new"``; a finished arm with another config hash is a ValueError naming the arm and both hashes."""
    done = arm.directory / DONE
    if done.exists():
        recorded = json.loads(done.read_text(encoding="utf-8")).get("config_sha256")
        if recorded != arm.sha256:
            raise ValueError(
                f"sweep arm {arm.name}: {done} was trained with config {recorded}, this sweep's arm is {arm.sha256} "
                "(its keys or the stack's changed): use another sweep.root, or move the arm's folder away"
            )
        return "done"
    if any((arm.directory / name).exists() for name in OUTPUTS):
        return "incomplete"
    return "new"


def arm_record(arm: Arm, model: dict | None) -> dict:
    """``record.json`` of an arm, written before it trains: what it ran with (runs that differ in any of these
    are never pooled silently: recipe/atesd/tools/repro_rows.py)."""
    return {
        "arm": arm.name,
        "config_sha256": arm.sha256,
        "config_file": CONFIG,
        "model": model,
        **code_state(),
        "cpu": cpu_model(),
        "started": datetime.now(UTC).isoformat(),
    }


def done_record(arm: Arm, started: datetime, reset_s: float, wall_s: float) -> dict:
    """``done.json`` of a trained arm: ``wall_s`` from the arm's reset to its last step's validation, of which
    ``reset_s`` putting the stack back (module docstring); steps' own time is in its metrics history."""
    return {
        "arm": arm.name,
        "config_sha256": arm.sha256,
        "reset_s": reset_s,
        "wall_s": wall_s,
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
    }
