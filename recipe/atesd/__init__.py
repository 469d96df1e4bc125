"""ATESD: on-policy self-distillation with adaptive teacher exposure, as a verl recipe.

Layers, top to bottom (an import only ever points down; tests/test_layers.py checks it):

- entry points ``main_atesd``, ``main_grpo`` (hydra, ``config/``), ``export``, ``evaluate_run``, ``table``
  (checkpoints → HF models → Average@k per step → the comparison table);
- ``glue/``   verl and Ray: trainer, worker + teacher, controller actor, platform switch, config checks;
- ``eval/``   Average@k evaluation; ``tools/`` tiny-model builder, metrics history, run summary and report;
  ``toy/`` the toy world (generated task, tokenizer, pretraining);
- ``method/`` the method core, pure torch/python (docs/method.md); ``data/`` and ``rewards/``.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
