"""The exposure controller (docs/method.md §2.2): state features, Beta policy, lookahead reward, REINFORCE."""

from recipe.atesd.method.controller.config import ControllerConfig
from recipe.atesd.method.controller.core import AlphaDecision, ExposureController, StepStats

__all__ = ["AlphaDecision", "ControllerConfig", "ExposureController", "StepStats"]
