# atesd — every target sets up the pinned environment first (idempotent, stamped).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.atesd-setup-stamp
TORCH_PIN := torch==2.13.0
# Integration tests start Ray + vLLM stacks; never run two at once on a 2-core machine.
PYTEST_ARGS ?=

.PHONY: setup test test-unit lint demo model data data-paper bench toy toy-build reproduce-toy reproduce-toy-report study-toy study-toy-report

setup: $(STAMP)

# torch first (the local CPU wheel), then the full pinned closure without dependency resolution,
# so nothing can pull a CUDA torch or torchcodec behind our back. Both installs run through uv (pinned, installed
# by pip): 10 s here where pip took ~60 s, and the same packages (`pip freeze` identical). uv reads no pip.conf:
# launch/uv_env.py passes on pip's index settings (find-links, extra indexes, constraints). Then compileall on
# every core (~30 s): left uncompiled, every process of the first run compiled the same modules at once (slower:
# measured). The one file excluded is py3.12-only syntax that pip's compile skipped as well.
UV_PIN := uv==0.13.10
$(STAMP): requirements.txt Makefile launch/uv_env.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(UV_PIN)
	eval "$$($(PY) launch/uv_env.py)"; \
	  $(VENV)/bin/uv pip install -q --python $(PY) $(TORCH_PIN) && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --no-deps -r requirements.txt
	$(PY) -m compileall -q -j 0 -x 'py312_intrinsics\.py$$' $(VENV)/lib
	$(PY) -c "import torch, verl, vllm, transformers; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# GPU cluster environment (docs/launching.md "GPU environment"): its own venv, $(GPU_VENV), from
# requirements-gpu.txt; run it on a GPU node with the CUDA 13 toolkit (nvcc, CUDA_HOME) in case flash-attn
# compiles. Build tools and torch first, pinned by requirements-gpu.txt as constraints: flash-attn's
# setup.py imports torch, so it is built with --no-build-isolation against them; then the rest (pip
# resolves the unpinned transitive dependencies). Never run on a GPU machine yet.
GPU_VENV ?= .venv-gpu
GPU_PY := $(GPU_VENV)/bin/python
GPU_STAMP := $(GPU_VENV)/.atesd-setup-stamp

.PHONY: setup-gpu
setup-gpu: $(GPU_STAMP)

$(GPU_STAMP): requirements-gpu.txt Makefile
	test -x $(GPU_PY) || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_PY) -m pip install -q --upgrade "pip>=24"
	$(GPU_PY) -m pip install -q -c requirements-gpu.txt setuptools wheel packaging ninja psutil torch
	$(GPU_PY) -m pip install -q -c requirements-gpu.txt --no-build-isolation flash-attn
	$(GPU_PY) -m pip install -q -r requirements-gpu.txt
	$(GPU_PY) -c "import torch, flash_attn, vllm, verl; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count())"
	touch $(GPU_STAMP)

# The main job: adaptive ATESD on the toy world (`+world=toy`, docs/toy.md: a pretrained, partially
# competent model and a learnable task, CPU when no GPU is visible), hold window 2 / lookahead 3 so the
# controller updates several times; held-out accuracy is validated at step 0 and at the end.
# Idempotent: a second `make demo` finds the run complete (checkpoint at the last step), trains nothing and
# prints the first run's summary; the metrics history and train.log are appended to, never truncated.
DEMO_DIR ?= outputs/demo
DEMO_STEPS ?= 40
DEMO_EXTRA ?=
DEMO_OVERRIDES ?= +world=toy controller.exposure_mode=adaptive controller.hold_window=2 controller.lookahead=3 \
	controller.batch_decisions=2 trainer.total_training_steps=$(DEMO_STEPS) trainer.save_freq=$(DEMO_STEPS) \
	trainer.test_freq=$(DEMO_STEPS) trainer.experiment_name=demo trainer.default_local_dir=$(CURDIR)/$(DEMO_DIR)/checkpoints

model: setup
	$(PY) -m recipe.atesd.data.tiny_model --out artifacts/tiny-qwen3 --seed 0

data: setup
	test -f data/tiny/train.parquet || $(PY) -m recipe.atesd.data.prepare_train \
		--input data/train/sample.jsonl --out data/tiny --val-size 32 --probe-size 32 --seed 0

# The papers' training set (OPSD's math problems with verified solutions; needs hub access) for the presets:
# data/processed/{train,val,probe}.parquet, rejects.jsonl and summary.json with the reference statistics
# (docs/launching.md §0). --max-teacher-length: the presets' teacher_prompt.max_length (experiment/_distill.yaml).
PAPER_DATASET ?= siyanzhao/Openthoughts_math_30k_opsd
PAPER_FIELDS ?= problem=problem,solution=solution
PAPER_DATA_DIR ?= data/processed

data-paper: setup
	$(PY) -m recipe.atesd.data.prepare_train --input $(PAPER_DATASET) --hf-split train \
		--field-map $(PAPER_FIELDS) --out $(PAPER_DATA_DIR) --val-size 64 --probe-size 64 --seed 0 \
		--max-teacher-length 16384

# The toy world (docs/toy.md): its parquet files, and its Qwen3 installed from the repository
# (models/toy-qwen3/, verified against its MANIFEST.json, copied to artifacts/toy-qwen3): seconds, no pretraining.
toy: setup
	test -f data/toy/heldout.parquet || $(PY) -m recipe.atesd.toy.build_data --out data/toy --seed 0
	$(PY) -m recipe.atesd.toy.shipped install

# Rebuild the toy model from scratch (4-5 min on 2 cores): pretrain build TOY_SPEC (recipe/atesd/toy/pretrain.py's SPECS) with
# TOY_SEED into TOY_BUILD_DIR, measure its exposure figures, print them beside the shipped model's and say whether
# the world's premise holds on what this CPU built (exit 1 if not). Use it with
# actor_rollout_ref.model.path=$(CURDIR)/$(TOY_BUILD_DIR); docs/toy.md says when a rebuild is worth it.
TOY_SPEC ?= default
TOY_SEED ?= 0
TOY_BUILD_DIR ?= artifacts/toy-qwen3-$(TOY_SPEC)-s$(TOY_SEED)

toy-build: setup
	$(PY) -m recipe.atesd.toy.shipped rebuild --spec $(TOY_SPEC) --seed $(TOY_SEED) --out $(TOY_BUILD_DIR)

demo: toy
	mkdir -p $(DEMO_DIR)
	VERL_FILE_LOGGER_PATH=$(CURDIR)/$(DEMO_DIR)/metrics.jsonl \
		$(PY) -m recipe.atesd.main_atesd $(DEMO_OVERRIDES) $(DEMO_EXTRA) 2>&1 | tee -a $(DEMO_DIR)/train.log
	$(PY) -m recipe.atesd.tools.summarize $(DEMO_DIR)/metrics.jsonl --ckpt $(DEMO_DIR)/checkpoints
	$(PY) -m recipe.atesd.tools.run_report $(DEMO_DIR)/metrics.jsonl --ckpt $(DEMO_DIR)/checkpoints --out $(DEMO_DIR)/report

# The toy-world reproduction of the paper's claims (issue 13; docs/toy.md "Reproduction"): fixed alpha in
# {0, .25, .5, .75, 1}, random, adaptive (the demo's H=2 L=3 B=2) and verl GRPO, REPRO_STEPS steps each (per
# seed, the ATESD methods as the arms of one sweep stack, GRPO a stack of its own: docs/toy.md "Sweep mode"),
# into $(REPRO_DIR)/<method>/seed<s>/; finished runs are skipped, an incomplete one is moved
# aside and restarted. Run it in parts with REPRO_METHODS (names or groups: all, fixed, fixed-0.5, random,
# adaptive, grpo) and REPRO_SEEDS (default: the plan's, sweep_plans.PLANS). Then (also when a run failed) the run records the report reads are packed into
# REPRO_RECORDS (recipe/atesd/tools/repro_archive.py; runs/ is not in git, the archive is) and the report is
# written from it: docs/toy-reproduction.md, docs/toy-reproduction/{results.json,*.png}.
# `make reproduce-toy-report` regenerates only the report, from REPRO_RECORDS (an archive or a sweep directory).
REPRO_DIR ?= runs/toy-repro
REPRO_STEPS ?= 40
REPRO_SEEDS ?=
REPRO_METHODS ?= all
REPRO_TEST_FREQ ?= 10
REPRO_EXTRA ?=
REPRO_REPORT ?= docs/toy-reproduction.md
REPRO_RECORDS ?= $(basename $(REPRO_REPORT))/runs.tar.xz

# The committed report's runs (docs/toy-reproduction/runs.tar.xz) were made on the `long` build, whose weights are
# gone: they cannot be regenerated, only their report. A new sweep packs its own records over that archive.
reproduce-toy: toy
	rc=0; $(PY) -m recipe.atesd.tools.repro_sweep --root $(REPRO_DIR) --steps $(REPRO_STEPS) \
		$(if $(strip $(REPRO_SEEDS)),--seeds $(REPRO_SEEDS)) --methods $(REPRO_METHODS) --test-freq $(REPRO_TEST_FREQ) \
		$(if $(strip $(REPRO_EXTRA)),--extra $(REPRO_EXTRA)) || rc=$$?; \
	$(PY) -m recipe.atesd.tools.repro_archive $(REPRO_DIR) $(REPRO_RECORDS); \
	$(PY) -m recipe.atesd.tools.repro_report $(REPRO_RECORDS) --out $(REPRO_REPORT); exit $$rc

# The toy-world study (issue 30, docs/toy-study.md): per seed the study plan's 16 ATESD arms as one sweep stack
# (recipe/atesd/tools/repro_sweep.py, the table sweep_plans.STUDY_METHODS), then GRPO at the grid's lr, 200 steps, validation on the 1024
# held-out problems every 50 steps; GRPO's lr grid on its own seed: `make study-toy STUDY_METHODS=grpo-grid
# STUDY_SEEDS=100`. Resumable and runnable in parts (STUDY_SEEDS=0, then 1 ...; default: the plan's 0-4): finished runs are skipped, runs of
# another command or model refused. The records: `repro_archive --plan study runs/toy-study docs/toy-study/runs.tar.xz`.
STUDY_DIR ?= runs/toy-study
STUDY_SEEDS ?=
STUDY_METHODS ?= all

study-toy: toy
	$(PY) -m recipe.atesd.tools.repro_sweep --plan study --root $(STUDY_DIR) --steps 200 $(if $(strip $(STUDY_SEEDS)),--seeds $(STUDY_SEEDS)) \
		--methods $(STUDY_METHODS) --test-freq 50 --extra data.val_files=$(CURDIR)/data/toy/heldout.parquet

# The study's report (recipe/atesd/tools/study_report.py) from its packed records: docs/toy-study/results.md,
# results.json and the PNGs; data/toy/heldout.parquet (difficulty per problem) as `make toy` builds it, no model.
STUDY_RECORDS ?= docs/toy-study/runs.tar.xz
study-toy-report: setup
	test -f data/toy/heldout.parquet || $(PY) -m recipe.atesd.toy.build_data --out data/toy --seed 0
	$(PY) -m recipe.atesd.tools.study_report $(STUDY_RECORDS) --criteria docs/toy-study/criteria.yaml \
		--val-file data/toy/heldout.parquet --out docs/toy-study/results.md

# data/toy/val.parquet (held-out difficulties) as `make toy` builds it; the model is not needed.
reproduce-toy-report: setup
	test -f data/toy/val.parquet || $(PY) -m recipe.atesd.toy.build_data --out data/toy --seed 0
	$(PY) -m recipe.atesd.tools.repro_report $(REPRO_RECORDS) --out $(REPRO_REPORT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/bench_losses.py
