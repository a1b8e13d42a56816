# Everyday commands. `make help` lists them.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATASET_DIR := /usr/share/datasets/fashion-mnist
BASE ?= main

.PHONY: help dataset install repro test test-fast lint format report

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

dataset: ## install Fashion-MNIST from the Debian/Ubuntu package dataset-fashion-mnist
	@if [ ! -d $(DATASET_DIR) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; fi

install: ## install the project and its dev tools (editable)
	$(PYTHON) -m pip install -q -e '.[dev]'

repro: dataset install ## the main job: install, then run the whole pipeline on the default params
	dvc repro

test: install lint ## lint, then the whole test suite (offline)
	$(PYTHON) -m pytest

test-fast: ## unit and contract tests only: no training, no dvc runs (about a minute)
	$(PYTHON) -m pytest -m "not slow"

lint: ## lint only (code, and the CI workflows against GitHub's schema)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m check_jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

format: ## format and fix what ruff can
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

report: ## preview the PR comment: the workspace against BASE (default main) in report.md
	fmnist report --base $(BASE) -o report.md
