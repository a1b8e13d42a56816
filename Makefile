# Everyday commands. `make help` lists them. Everything runs in .venv, built from the lock
# (requirements/lock-py3.11.txt; docs/environment.md): nothing is installed into the system Python.
ifndef PYTHON
# The Python that builds .venv: the lock's version where it is installed beside another python3.
PYTHON := $(shell command -v python3.11 || command -v python3)
endif
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATASET_DIR := /usr/share/datasets/fashion-mnist
BASE ?= main
# GPU=1: the lock with TensorFlow's CUDA libraries; GPU=0: back to the CPU lock; unset: as built.
GPU ?=
ENVIRONMENT := PYTHONPATH=src $(PYTHON) -m fmnist.environment

# Recipes (and the `python3` in dvc.yaml's stage commands) run the environment's programs.
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)

.PHONY: help venv dataset repro test test-fast lint format report lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: ## create or refresh .venv from the lock (nothing to do when the lock is unchanged)
	@$(ENVIRONMENT) check $(if $(filter 1,$(GPU)),--gpu)
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || ! command -v apt-get >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	@$(ENVIRONMENT) sync --venv $(VENV) $(if $(filter 1,$(GPU)),--gpu,$(if $(filter 0,$(GPU)),--cpu))

dataset: ## install Fashion-MNIST from the Debian/Ubuntu package dataset-fashion-mnist
	@if [ ! -d $(DATASET_DIR) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; fi

repro: venv dataset ## the main job: the environment and the dataset, then `dvc repro`
	dvc repro

test: venv lint ## lint, then the whole test suite (offline), one worker per core
	python -m pytest -n auto --dist loadfile --durations=30

test-fast: venv ## unit and contract tests only: no training, no dvc runs (a few minutes)
	python -m pytest -m "not slow" -n auto --dist loadfile

lint: venv ## lint only (code, and the CI workflows against GitHub's schema)
	python -m ruff check .
	python -m ruff format --check .
	python -m check_jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

format: venv ## format and fix what ruff can
	python -m ruff format .
	python -m ruff check --fix .

report: venv ## preview the PR comment: the workspace against BASE (default main) in report.md
	fmnist report --base $(BASE) -o report.md

lock: ## regenerate the locks from pyproject.toml (UPGRADE=1: the newest versions it allows)
	@$(ENVIRONMENT) lock $(if $(filter 1,$(UPGRADE)),--upgrade)
