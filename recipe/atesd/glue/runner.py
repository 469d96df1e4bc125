"""Ray glue: verl's V1 task runner, in a process that has registered this recipe's trainer modes
(``sync_history``: verl's sync trainer with the resumable metrics history, recipe/atesd/glue/sync_trainer.py;
``atesd``: recipe/atesd/glue/trainer.py). Both entry points run through it."""

from __future__ import annotations

import ray
from verl.trainer.main_ppo import TaskRunnerV1


class _RecipeRunner(TaskRunnerV1.__ray_actor_class__):
    def run(self, config):
        import recipe.atesd.glue.trainer  # noqa: F401  (registers trainer modes "sync_history" and "atesd")

        return super().run(config)


RecipeTaskRunner = ray.remote(_RecipeRunner)
