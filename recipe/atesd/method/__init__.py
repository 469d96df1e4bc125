"""The method core (docs/method.md): teacher prompts and exposure, distillation losses, teacher scoring,
the probe set, the exposure controller and the final-answer parser (``answer.py``). Pure torch/python:
nothing here imports verl, Ray, vLLM or the glue (tests/test_layers.py holds every package to its layer)."""
