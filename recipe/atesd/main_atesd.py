"""Entry point: ``python -m recipe.atesd.main_atesd [hydra overrides...]``.

Config ``config/atesd_trainer.yaml`` is verl's own ``ppo_trainer`` (from the installed package)
plus our groups (exposure, controller, distill, probe, platform). With no accelerator visible the
``platform=cpu`` group and our verl patches are switched on automatically.
``dry_run=true`` prints the resolved config and the resource plan and starts nothing. A run whose
checkpoints already reach ``trainer.total_training_steps`` (``resume_mode=auto``) is complete: the entry
point says so and exits 0 without starting Ray (its metrics history is left as it is). With ``sweep.arms`` the
stack trains several arms one after another (recipe/atesd/glue/sweep.py); each arm's config is checked here first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from recipe.atesd.glue.platform import REPO_ROOT, configure_process_env, with_platform_override


def resource_plan(cfg: DictConfig) -> dict:
    """Where everything runs: one colocated pool; the teacher and the controller need no GPU of their own."""
    from recipe.atesd.glue.config_check import uses_lora
    from recipe.atesd.method.teacher import teacher_weights

    kind = cfg.teacher.kind
    teacher = {
        "actor": "the actor module itself (current weights), in the actor worker",
        "adapters_off": "the actor module with LoRA adapters disabled (initial weights), in the actor worker",
        "reference": f"a {kind} reference copy fused into the actor worker (same GPUs)",
    }[teacher_weights(kind, uses_lora(cfg.actor_rollout_ref.model))]
    gpus = cfg.trainer.n_gpus_per_node
    return {
        "nodes": cfg.trainer.nnodes,
        "gpus_per_node": gpus,
        "total_gpus": cfg.trainer.nnodes * gpus,
        "pools": {"global_pool": [gpus] * cfg.trainer.nnodes},
        "colocated_on_global_pool": ["actor (FSDP student)", "vLLM rollout", f"teacher: {teacher}"],
        "driver": ["trainer", "exposure controller actor (0 GPUs)"],
    }


def completed_step(cfg: DictConfig) -> int | None:
    """The latest checkpoint step when it already reaches ``trainer.total_training_steps``, else None.

    Only for ``resume_mode=auto`` with an explicit step budget and ``val_only=false``: then resuming would
    train nothing (verl's tracker file ``latest_checkpointed_iteration.txt`` names the step).
    """
    trainer = cfg.trainer
    if (
        trainer.resume_mode != "auto"
        or trainer.total_training_steps is None
        or trainer.get("val_only", False)
    ):
        return None
    from recipe.atesd.tools.summarize import TRACKER

    tracker = Path(trainer.default_local_dir) / TRACKER
    if not tracker.exists():
        return None
    step = int(tracker.read_text().strip())
    return step if step >= trainer.total_training_steps else None


@hydra.main(config_path="config", config_name="atesd_trainer", version_base=None)
def main(cfg: DictConfig) -> None:
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from recipe.atesd.glue.config_check import check_atesd_config
    from recipe.atesd.glue.sweep import prepare

    OmegaConf.resolve(cfg)  # env-based paths resolve here, on the submitting machine
    auto_set_device(cfg)
    check_atesd_config(cfg)
    arms = prepare(cfg)
    for arm in arms:  # every arm checked before the stack starts (recipe/atesd/glue/sweep.py)
        try:
            check_atesd_config(arm.config)
        except ValueError as err:
            raise ValueError(f"sweep.arms.{arm.name}: {err}") from err
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    if cfg.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        print("# resource plan\n" + OmegaConf.to_yaml(OmegaConf.create(resource_plan(cfg))))
        for arm in arms:
            print(f"# sweep arm {arm.name}: {arm.directory}")
        return
    done = completed_step(cfg)
    if done is not None:
        print(
            f"[atesd] nothing to train: {cfg.trainer.default_local_dir} already holds global_step_{done} "
            f"(trainer.total_training_steps={cfg.trainer.total_training_steps}). Raise total_training_steps to "
            "train further, or start over with trainer.resume_mode=disable or a new trainer.default_local_dir."
        )
        return
    from recipe.atesd.glue.runner import RecipeTaskRunner
    from recipe.atesd.glue.sync_trainer import record_start_model

    record_start_model(cfg)
    run_ppo(cfg, task_runner_class=RecipeTaskRunner)


if __name__ == "__main__":
    os.environ.setdefault("ATESD_REPO", str(REPO_ROOT))  # data/model paths in the config resolve from here
    sys.argv = [sys.argv[0], *with_platform_override(sys.argv[1:], configure_process_env())]
    main()
