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

# The environment: requirements.lock (uv, from pyproject.toml + lock-constraints.txt) pins every
# package; `make install` installs exactly those versions, `make lock` refreshes the file.
LOCK := requirements.lock
TORCH_VERSION = $(shell sed -n 's/^torch==\([^ ;]*\).*/\1/p' $(LOCK))
# Where torch comes from. Empty: pip's configured sources (the CPU build on this machine).
# GPU cluster: TORCH_INDEX=https://download.pytorch.org/whl/cu130 (its CUDA build, same version).
TORCH_INDEX ?=
UPGRADE ?=

$(VENV)/.installed: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, with its own dependencies (a CUDA build brings its CUDA libraries); the lock
	@# pins the version only, so the build installed here satisfies it.
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	@touch $@

install: $(VENV)/.installed ## create .venv and install exactly requirements.lock (TORCH_INDEX=<url>: torch from there)

$(VENV)/bin/uv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $$(grep '^uv==' $(LOCK))

# uv does not read pip's configuration: hand it the sources pip uses on this machine (index,
# extra indexes, find-links), so that the lock resolves from what `make install` installs from.
lock: $(VENV)/bin/uv ## refresh requirements.lock with uv after a pyproject change (UPGRADE=1: newest allowed versions)
	@set -e; cfg() { $(PY) -m pip config get "global.$$1" 2>/dev/null || true; }; src=(); \
	for u in $${PIP_INDEX_URL:-$$(cfg index-url)}; do src+=(--default-index "$$u"); done; \
	for u in $${PIP_EXTRA_INDEX_URL:-$$(cfg extra-index-url)}; do src+=(--index "$$u"); done; \
	for u in $${PIP_FIND_LINKS:-$$(cfg find-links)}; do src+=(--find-links "$$u"); done; \
	set -x; $(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra eval --extra tracking \
		-c lock-constraints.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		"$${src[@]}" --index-strategy unsafe-best-match --custom-compile-command 'make lock' \
		$(if $(UPGRADE),--upgrade) --quiet -o $(LOCK)
	@# the lock names torch's version, not its build: each machine installs its own build
	sed -i 's/^torch==\([^+ ]*\)+[^ ]*/torch==\1/' $(LOCK)

test: install ## run the whole test suite (unit + integration: mlflow server, SLURM)
	$(PY) -m pytest -n 2 --dist loadgroup --durations=25 $(ARGS)

test-fast: install ## unit tests only (no slow/integration)
	$(PY) -m pytest -m "not slow and not integration" $(ARGS)

lint: install ## ruff check (line length 100)
	$(VENV)/bin/ruff check .

bench: install ## throughput (Leviathan/Dense), data pipeline and tracking-load benchmarks
	$(PY) -m leviathan.bench throughput
	$(PY) -m leviathan.bench data
	$(PY) -m leviathan.bench tracking --jobs 16 --backend sqlite

# Config overrides on make's command line go on, in the order given, to the Hydra entry point
# that fit-scaling, dashboard and demo wrap: `make fit-scaling fit.b=free
# +fit.seed_noise.leviathan=0.01 '~fit.b_grid'`. Make reads `key=value` and `+key=value` as
# variables (MAKEOVERRIDES: newest first, spaces as `\ `) and `~key` as a goal (a no-op rule
# below). A variable that is neither a config key (its first part a group or top-level key of
# conf/) nor one of this Makefile's (or a LEVIATHAN_*/MLFLOW_* environment variable for the
# command) stops these targets with an error naming it, before anything runs.
HYDRA_TARGETS := fit-scaling dashboard demo
MAKE_VARS := PYTHON VENV SWEEP ARGS TORCH_INDEX UPGRADE MLFLOW_PORT DEMO_ARGS TRACKING_DIR \
	TRACKING_HOST TRACKING_PORT TRACKING_WORKERS TRACKING_AUTH TRACKING_NO_AUTH USER_NAME ROLE \
	TIKTOKEN_CACHE_DIR
CONFIG_ROOTS := $(sort $(notdir $(patsubst %/,%,$(wildcard conf/*/))) seed run_name resume meta \
	hydra sweep design)
_sp := ^^SP^^
_reverse = $(if $(1),$(call _reverse,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
_cli_vars := $(call _reverse,$(subst \ ,$(_sp),$(MAKEOVERRIDES)))
_name = $(firstword $(subst =, ,$(1)))
_is_override = $(or $(filter +% ~%,$(1)),$(filter $(CONFIG_ROOTS),$(firstword $(subst ., ,$(1)))))
_is_make_var = $(filter $(MAKE_VARS) LEVIATHAN_% MLFLOW_%,$(1))
_shell_quote = '$(subst ','\'',$(subst $(_sp), ,$(1)))'
# the overrides, shell-quoted: command-line variables in their order, then the `~key` goals
CONFIG_OVERRIDES = $(foreach w,$(_cli_vars),$(if $(call _is_override,$(call _name,$(w))),\
	$(call _shell_quote,$(w)))) $(foreach g,$(filter ~%,$(MAKECMDGOALS)),$(call _shell_quote,$(g)))
ifneq ($(filter $(HYDRA_TARGETS),$(MAKECMDGOALS)),)
$(foreach w,$(_cli_vars),$(if $(or $(call _is_override,$(call _name,$(w))),\
	$(call _is_make_var,$(call _name,$(w)))),,$(error $(subst $(_sp), ,$(w)) is neither a \
	config override (conf/ has no `$(firstword $(subst ., ,$(call _name,$(w))))`$(if \
	$(findstring .,$(call _name,$(w))),,: fit.$(subst $(_sp), ,$(w))?)) nor a variable of \
	this Makefile ($(MAKE_VARS)))))
endif
~%: ; @:

fit-scaling: install ## fit L(N) and multipliers for the latest sweep (or SWEEP=<name>; fit.<key>=value: conf/fit/)
	$(PY) -m analysis.fit_scaling $(if $(SWEEP),--sweep $(SWEEP),--latest) $(ARGS) $(CONFIG_OVERRIDES)

MLFLOW_PORT ?= 5000
dashboard: install ## MLflow UI on 127.0.0.1 (MLFLOW_PORT=5000) over the store the sweeps log to
	$(PY) -m leviathan.cli.dashboard --port $(MLFLOW_PORT) $(CONFIG_OVERRIDES)

TRACKING_DIR ?=
TRACKING_HOST ?= 127.0.0.1
TRACKING_PORT ?= $(MLFLOW_PORT)
TRACKING_WORKERS ?= 4
_tracking_dir = $(if $(TRACKING_DIR),$(TRACKING_DIR),$(error set TRACKING_DIR=<folder> for PostgreSQL, artifacts and logs))
# Beyond loopback the server asks for a login (MLflow basic-auth); TRACKING_NO_AUTH=1 opts out
# (with a warning), TRACKING_AUTH=1 turns it on for a loopback server too.
TRACKING_AUTH ?=
TRACKING_NO_AUTH ?=
_auth_flag = $(if $(TRACKING_NO_AUTH),--no-auth,$(if $(TRACKING_AUTH),--auth))
tracking-server: install ## MLflow on PostgreSQL, several workers, login beyond loopback: TRACKING_DIR=<folder> [TRACKING_HOST=0.0.0.0 TRACKING_PORT=5000 TRACKING_WORKERS=4]
	$(PY) -m leviathan.tracking.service up --dir $(_tracking_dir) --host $(TRACKING_HOST) --port $(TRACKING_PORT) --workers $(TRACKING_WORKERS) $(_auth_flag)

USER_NAME ?=
ROLE ?= reader
tracking-user: install ## a login on the tracking server: TRACKING_DIR=<folder> USER_NAME=sweep ROLE=writer|reader (writes <folder>/users/<name>.credentials, 0600)
	$(PY) -m leviathan.tracking.service user --dir $(_tracking_dir) --name $(if $(USER_NAME),$(USER_NAME),$(error set USER_NAME=<login>)) --role $(ROLE)

tracking-server-status: install ## is the PostgreSQL-backed MLflow server in TRACKING_DIR up (exit 0) or not
	$(PY) -m leviathan.tracking.service status --dir $(_tracking_dir)

tracking-server-stop: install ## stop the PostgreSQL-backed MLflow server in TRACKING_DIR (MLflow, then PostgreSQL)
	$(PY) -m leviathan.tracking.service down --dir $(_tracking_dir)

DEMO_ARGS ?=
demo: install ## the whole platform end to end: demo corpus, MLflow, smoke sweep, fit, summary
	$(PY) -m leviathan.demo --port $(MLFLOW_PORT) $(DEMO_ARGS) $(CONFIG_OVERRIDES)

.PHONY: help install lock test test-fast lint bench fit-scaling dashboard demo tracking-server \
	tracking-server-status tracking-server-stop tracking-user
