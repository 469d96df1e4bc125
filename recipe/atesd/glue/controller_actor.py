"""Ray glue: the exposure controller as a small actor pinned to the driver's node.

It only forwards to :class:`recipe.atesd.method.controller.ExposureController` (pure torch); its
messages are a few floats per update, so it costs no GPU and next to no time.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from recipe.atesd.method.controller import ControllerConfig, ExposureController, StepStats


class _ControllerHost:
    def start(self, controller: dict, total_steps: int, seed: int) -> None:
        """A new controller (config, step budget, seed): a run's, or a sweep arm's (recipe/atesd/glue/sweep.py)."""
        self._ctrl = ExposureController(ControllerConfig.from_mapping(controller), total_steps, seed)

    def decide(self, step: int):
        return self._ctrl.decide(step)

    def observe_baseline(self, probe_nll: float) -> None:
        self._ctrl.observe_baseline(probe_nll)

    def observe(self, step: int, stats: StepStats) -> dict:
        return self._ctrl.observe(step, stats)

    def state_dict(self) -> dict:
        return self._ctrl.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._ctrl.load_state_dict(state)


def spawn_controller():
    """Start the controller's actor on this (the driver's) node: 0 GPUs, a fraction of a CPU; its ``start``
    builds the controller."""
    node = ray.get_runtime_context().get_node_id()
    actor_cls = ray.remote(num_cpus=0.01, num_gpus=0)(_ControllerHost)
    return actor_cls.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    ).remote()
