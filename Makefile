# Two entry points: `make demo` and `make test`. Both set everything up from nothing but
# Python 3.11 and the package registries.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup demo test lint typecheck unit crds chart-crds clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,dev]'
	@bash scripts/system-deps.sh
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/hosted-engine demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Regenerate the CRDs from the pydantic models (crds/ and the chart's copy).
crds: $(STAMP)
	$(BIN)/hosted-engine crds --output-dir crds
	$(BIN)/hosted-engine crds --output-dir charts/hosted-engine-operator/crds-src

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
