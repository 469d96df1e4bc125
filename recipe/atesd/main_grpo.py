"""verl's own GRPO (V1 trainer) on this machine: ``python -m recipe.atesd.main_grpo [hydra overrides]``.

Picks the platform first (:mod:`recipe.atesd.glue.platform`: on a host without CUDA it exports the
``verl_patches`` activation variables *before* verl is imported and selects ``platform=cpu``), then
composes ``recipe/atesd/config/grpo_trainer.yaml`` (verl's installed ``ppo_trainer`` + tiny defaults +
the platform group) and runs verl's ``run_ppo`` as ``verl.trainer.main_ppo`` does, with verl's V1 task runner in
a process that has registered ``trainer.v1.trainer_mode=sync_history``: verl's sync trainer whose metrics history
survives a resume (recipe/atesd/glue/sync_trainer.py).
"""

import os
import sys

from recipe.atesd.glue.platform import REPO_ROOT, configure_process_env, with_platform_override

PLATFORM = configure_process_env()

import hydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402


@hydra.main(config_path="config", config_name="grpo_trainer", version_base=None)
def main(config) -> None:
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    # ${oc.env:ATESD_REPO} paths: resolve in the driver, whose environment set it, not in the Ray task runner.
    OmegaConf.resolve(config)
    auto_set_device(config)
    validate_config(
        config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
    )
    if not config.trainer.use_v1 or config.trainer.v1.trainer_mode != "sync_history":
        raise ValueError(
            "trainer.use_v1 must be true and trainer.v1.trainer_mode 'sync_history': this entry point runs verl's "
            "V1 sync trainer with the resumable metrics history (recipe/atesd/glue/sync_trainer.py)"
        )
    from recipe.atesd.glue.runner import RecipeTaskRunner
    from recipe.atesd.glue.sync_trainer import record_start_model

    record_start_model(config)
    run_ppo(config, task_runner_class=RecipeTaskRunner)


if __name__ == "__main__":
    os.environ.setdefault("ATESD_REPO", str(REPO_ROOT))  # data/model paths in the config resolve from here
    sys.argv = [sys.argv[0], *with_platform_override(sys.argv[1:], PLATFORM)]
    main()
