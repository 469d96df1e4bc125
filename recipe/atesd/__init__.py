"""ATESD: on-policy self-distillation with adaptive teacher exposure, as a verl recipe.

Method core (pure torch/python, no verl/Ray): :mod:`exposure`, :mod:`losses`, :mod:`controller`.
verl glue: the trainer, workers and entry points.
"""
