# atesd — every target sets up the pinned environment first (idempotent, stamped).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.atesd-setup-stamp
TORCH_PIN := torch==2.13.0
# Integration tests start Ray + vLLM stacks; never run two at once on a 2-core machine.
PYTEST_ARGS ?=

.PHONY: setup test test-unit lint demo bench clean-shm

setup: $(STAMP)

# torch first (the local CPU wheel), then the full pinned closure without dependency resolution,
# so nothing can pull a CUDA torch or torchcodec behind our back.
$(STAMP): requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q --no-deps -r requirements.txt
	$(PY) -c "import torch, verl, vllm, transformers; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/bench_losses.py

clean-shm:
	$(PY) -m tests.shm_hygiene --clean-all-own
