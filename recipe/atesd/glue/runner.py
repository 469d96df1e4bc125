"""Ray glue: verl's V1 task runner, in a process that has registered the ``atesd`` trainer mode."""

from __future__ import annotations

import ray
from verl.trainer.main_ppo import TaskRunnerV1


class _ATESDRunner(TaskRunnerV1.__ray_actor_class__):
    def run(self, config):
        import recipe.atesd.glue.trainer  # noqa: F401  (registers trainer mode "atesd")

        return super().run(config)


ATESDTaskRunner = ray.remote(_ATESDRunner)
