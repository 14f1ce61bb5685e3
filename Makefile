# Leviathan scaling-law platform. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
SWEEP ?=
ARGS ?=
# tiktoken's vocabulary cache: one place for every target (stage offline files here).
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.cache/tiktoken

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# CPU machines: install the local CPU build of torch first, so nothing pulls a CUDA build.
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c 'import torch' 2>/dev/null; then \
		$(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e '.[dev,eval]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the project (torch CPU build first on machines without a GPU)

test: install ## run the whole test suite (unit + integration: mlflow server, SLURM)
	$(PY) -m pytest --durations=25 $(ARGS)

test-fast: install ## unit tests only (no slow/integration)
	$(PY) -m pytest -m "not slow and not integration" $(ARGS)

lint: install ## ruff check (line length 100)
	$(VENV)/bin/ruff check .

bench: install ## throughput (Leviathan/Dense) and data pipeline benchmarks
	$(PY) -m leviathan.bench throughput
	$(PY) -m leviathan.bench data

fit-scaling: install ## fit L(N) and multipliers for the latest sweep (or SWEEP=<name>)
	$(PY) -m analysis.fit_scaling $(if $(SWEEP),--sweep $(SWEEP),--latest) $(ARGS)

MLFLOW_PORT ?= 5000
dashboard: install ## MLflow UI on 127.0.0.1 (MLFLOW_PORT=5000) over the store the sweeps log to
	$(PY) -m leviathan.tracking.dashboard --port $(MLFLOW_PORT)

DEMO_ARGS ?=
demo: install ## the whole platform end to end: demo corpus, MLflow, smoke sweep, fit, summary
	$(PY) -m leviathan.demo --port $(MLFLOW_PORT) $(DEMO_ARGS)

.PHONY: help install test test-fast lint bench fit-scaling dashboard demo
