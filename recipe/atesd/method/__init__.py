"""The method core (docs/method.md): teacher prompts and exposure, distillation losses, teacher scoring,
the probe set and the exposure controller. Pure torch/python: nothing here imports verl, Ray, vLLM or
the glue (tests/test_layers.py holds every package to its layer)."""
