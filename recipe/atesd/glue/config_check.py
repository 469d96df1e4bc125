"""Validate an ATESD run's config and data before anything starts (no Ray, no GPU).

Every error names the offending key (or the data row id): a bad run fails in seconds on the
submitting machine, never deep inside a Ray worker.
"""

from __future__ import annotations

import os
from dataclasses import fields

import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from recipe.atesd.data.donor_rows import donor_rows
from recipe.atesd.method.controller.config import ControllerConfig
from recipe.atesd.method.difficulty import difficulty, quantile_edges
from recipe.atesd.method.losses import DistillLossConfig
from recipe.atesd.method.probe import REQUIRED_EXTRA_INFO
from recipe.atesd.method.prompts import TEACHER_CONTEXTS, TeacherPromptConfig
from recipe.atesd.method.teacher import TeacherConfig, teacher_weights
from recipe.atesd.method.teacher_targets import check_target, uses_alpha, view_contexts


def uses_lora(model_cfg) -> bool:
    """Whether verl's ``actor_rollout_ref.model`` trains LoRA adapters (``lora.rank`` or ``lora_rank`` > 0)."""
    return ((model_cfg.get("lora", {}) or {}).get("rank", 0) or model_cfg.get("lora_rank", 0) or 0) > 0


def plain(node) -> dict:
    """A config group as a plain dict (resolved), for the dataclasses and for crossing Ray."""
    return OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)


def check_atesd_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the first bad key of the ATESD groups or of their verl neighbours."""
    prompt = TeacherPromptConfig(**plain(cfg.teacher_prompt))
    controller = ControllerConfig.from_mapping(plain(cfg.controller)).validate()
    distill = distill_config(plain(cfg.distill))
    check_target(distill.target, prompt.teacher_context)
    if not uses_alpha(distill.target, prompt.teacher_context) and controller.exposure_mode != "fixed":
        raise ValueError(
            f"teacher_prompt.teacher_context={prompt.teacher_context} with distill.target={distill.target} does "
            f"not use α, so controller.exposure_mode={controller.exposure_mode} would choose α for nothing: use "
            "controller.exposure_mode=fixed"
        )
    teacher = TeacherConfig(**plain(cfg.teacher)).validate()
    teacher_weights(teacher.kind, uses_lora(cfg.actor_rollout_ref.model))
    if not cfg.trainer.use_v1 or cfg.trainer.v1.trainer_mode != "atesd":
        raise ValueError("trainer.use_v1 must be true and trainer.v1.trainer_mode must be 'atesd'")
    if cfg.actor_rollout_ref.model.get("use_fused_kernels", False):
        raise ValueError(
            "actor_rollout_ref.model.use_fused_kernels must be false: verl's fused kernels never call the "
            "distillation loss (ATESD's own hidden-state path is distill.fused)"
        )
    if cfg.actor_rollout_ref.actor.get("ulysses_sequence_parallel_size", 1) != 1:
        raise ValueError("actor_rollout_ref.actor.ulysses_sequence_parallel_size must be 1 for ATESD")
    if cfg.probe.batch_size < 1:
        raise ValueError(f"probe.batch_size must be >= 1, got {cfg.probe.batch_size}")
    if cfg.probe.size is not None and cfg.probe.size < 1:
        raise ValueError(f"probe.size must be >= 1 or null, got {cfg.probe.size}")
    _check_file(cfg.probe.path, "probe.path")
    for key in ("train_files", "val_files"):
        files = cfg.data[key]
        for path in [files] if isinstance(files, str) else list(files):
            _check_file(path, f"data.{key}")
    train = cfg.data.train_files
    for path in [train] if isinstance(train, str) else list(train):
        check_reference_rows(path)
    check_reference_rows(cfg.probe.path)
    contexts = view_contexts(distill.target, prompt.teacher_context)
    if any("donor_problem" in TEACHER_CONTEXTS[c].needs for c in contexts):  # other_reference: pairable here
        donor_rows(train, cfg.probe.path, prompt.donor_seed)
    resolve_bucket_edges(controller, train)
    if controller.buckets > 1:  # the probe's g places every probe row in its bucket (docs/method.md §2.4)
        _difficulties(controller, [cfg.probe.path], "probe.path")


def distill_config(settings: dict) -> DistillLossConfig:
    """The validated ``distill`` group; an unknown key is a ValueError naming it. ``distill.temperature``
    (an old key) names the sampling temperature's one home, ``actor_rollout_ref.rollout.temperature``."""
    known = {f.name for f in fields(DistillLossConfig)}
    unknown = sorted(set(settings) - known)
    if "temperature" in unknown:
        raise ValueError(
            "distill.temperature is not a key: the sampling temperature is actor_rollout_ref.rollout.temperature "
            "(verl divides the student's logits by it, recipe/atesd/glue/worker.py the teacher's); set that instead"
        )
    if unknown:
        raise ValueError(f"distill: unknown key(s) {unknown} (known: {sorted(known)})")
    return DistillLossConfig(**settings).validate()


def resolve_bucket_edges(controller: ControllerConfig, train_files) -> tuple[float, ...]:
    """The run's bucket edges (docs/method.md §2.4): () for one bucket; ``controller.bucket_edges`` when set;
    else the K-quantiles (``quantile_edges``) of the difficulty signal over every row of ``train_files``.
    ValueError naming the key when the signal cannot be read before training or the quantiles tie."""
    if controller.buckets == 1:
        return ()
    if controller.bucket_edges:
        return tuple(float(e) for e in controller.bucket_edges)
    files = [train_files] if isinstance(train_files, str) else list(train_files)
    values = _difficulties(controller, files, "data.train_files")
    edges = quantile_edges(values, controller.num_buckets)
    if len(edges) != controller.num_buckets - 1:
        raise ValueError(
            f"controller.num_buckets = {controller.num_buckets}: the {controller.difficulty_signal!r} values of "
            f"data.train_files ({len(set(values))} distinct) give only {len(edges)} distinct quantile edges "
            f"{edges}; set controller.bucket_edges or lower controller.num_buckets"
        )
    return tuple(edges)


def _difficulties(controller: ControllerConfig, paths: list[str], key: str) -> list[float]:
    """The difficulty signal of every row of ``paths`` (ValueError naming the file, row and key when unreadable)."""
    values = []
    for path in paths:
        infos = pq.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()
        try:
            values += difficulty(controller.difficulty_signal, infos, controller.difficulty_level_key)
        except ValueError as err:
            raise ValueError(f"{key} {path}: {err} (controller.difficulty_level_key)") from err
    return values


def check_reference_rows(path: str) -> int:
    """Every row must carry extra_info.{id, problem, reference_solution, answer}; error names the row id."""
    table = pq.read_table(path, columns=["extra_info"])
    for i, info in enumerate(table.column("extra_info").to_pylist()):
        row_id = (info or {}).get("id") or f"#{i}"
        for key in REQUIRED_EXTRA_INFO:
            value = (info or {}).get(key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"{path}: row id {row_id!r} has no extra_info.{key} (ATESD needs a reference solution per row; "
                    "build the file with python -m recipe.atesd.data.prepare_train)"
                )
    return table.num_rows


def _check_file(path, key: str) -> None:
    if not path or not os.path.isfile(path):
        raise ValueError(f"{key}: file not found: {path!r}")
