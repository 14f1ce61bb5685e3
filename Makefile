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
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-22s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# CPU machines: install the local CPU build of torch first, so nothing pulls a CUDA build.
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c 'import torch' 2>/dev/null; then \
		$(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e '.[dev,eval,tracking]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the project (torch CPU build first on machines without a GPU)

test: install ## run the whole test suite (unit + integration: mlflow server, SLURM)
	$(PY) -m pytest --durations=25 $(ARGS)

test-fast: install ## unit tests only (no slow/integration)
	$(PY) -m pytest -m "not slow and not integration" $(ARGS)

lint: install ## ruff check (line length 100)
	$(VENV)/bin/ruff check .

bench: install ## throughput (Leviathan/Dense), data pipeline and tracking-load benchmarks
	$(PY) -m leviathan.bench throughput
	$(PY) -m leviathan.bench data
	$(PY) -m leviathan.bench tracking --jobs 16 --backend sqlite

fit-scaling: install ## fit L(N) and multipliers for the latest sweep (or SWEEP=<name>)
	$(PY) -m analysis.fit_scaling $(if $(SWEEP),--sweep $(SWEEP),--latest) $(ARGS)

MLFLOW_PORT ?= 5000
dashboard: install ## MLflow UI on 127.0.0.1 (MLFLOW_PORT=5000) over the store the sweeps log to
	$(PY) -m leviathan.tracking.dashboard --port $(MLFLOW_PORT)

TRACKING_DIR ?=
TRACKING_HOST ?= 127.0.0.1
TRACKING_PORT ?= $(MLFLOW_PORT)
TRACKING_WORKERS ?= 4
_tracking_dir = $(if $(TRACKING_DIR),$(TRACKING_DIR),$(error set TRACKING_DIR=<folder> for PostgreSQL, artifacts and logs))
tracking-server: install ## MLflow on PostgreSQL, several workers: TRACKING_DIR=<folder> [TRACKING_HOST=0.0.0.0 TRACKING_PORT=5000 TRACKING_WORKERS=4]
	$(PY) -m leviathan.tracking.service up --dir $(_tracking_dir) --host $(TRACKING_HOST) --port $(TRACKING_PORT) --workers $(TRACKING_WORKERS)

tracking-server-status: install ## is the PostgreSQL-backed MLflow server in TRACKING_DIR up (exit 0) or not
	$(PY) -m leviathan.tracking.service status --dir $(_tracking_dir)

tracking-server-stop: install ## stop the PostgreSQL-backed MLflow server in TRACKING_DIR (MLflow, then PostgreSQL)
	$(PY) -m leviathan.tracking.service down --dir $(_tracking_dir)

DEMO_ARGS ?=
demo: install ## the whole platform end to end: demo corpus, MLflow, smoke sweep, fit, summary
	$(PY) -m leviathan.demo --port $(MLFLOW_PORT) $(DEMO_ARGS)

.PHONY: help install test test-fast lint bench fit-scaling dashboard demo tracking-server \
	tracking-server-status tracking-server-stop
