# The README's two commands. Each one sets up everything it needs (.venv, install) first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Two workers: the suite runs in about half the time on the 2-core machines CI uses.
PYTEST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: test demo install lint typecheck unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check bot pipelines storage tests bench
	$(BIN)/ruff format --check bot pipelines storage tests bench

typecheck: install
	$(BIN)/mypy bot pipelines storage

unit: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck unit

# The sandbox at http://127.0.0.1:8765 with days of history; DEMO_ARGS="--reuse" keeps the last one.
demo: install
	$(BIN)/python -m bot.demo $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache
