# Loopline — one machine, one venv. Every target builds .venv first (a no-op when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Telemetry off in every tool we start (MLflow wants exactly "true").
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: install test test-fast check demo up down status lint bench clean-state

install: $(STAMP)

# Rebuilt only when the pinned environment or the package metadata changes.
$(STAMP): requirements.txt constraints.txt pyproject.toml examples/maintenance/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# The example use case, installed the way a team installs its own (docs/bring-your-own-model.md).
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e examples/maintenance
	touch $(STAMP)

# The whole suite, after the static checks of `make check` (so CI, which runs this, runs everything `check`
# does without running the fast tests twice).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

# Unit and DAG tests only (no services started).
test-fast: install
	$(BIN)/pytest -m "not integration"

demo: install
	$(BIN)/loopline demo

up: install
	$(BIN)/loopline up

down: install
	$(BIN)/loopline down

status: install
	$(BIN)/loopline status

lint: install
	$(BIN)/ruff check .

# What must pass before a commit (pre-commit runs the first four) and first in CI: lint, format, types (mypy
# --strict over include/loopline, [tool.mypy]), the import contracts
# of pyproject.toml ([tool.importlinter]: the package layering, no Airflow under include/), the fast tests.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -m "not integration"

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Full reset of the embedded mode (stop the stack first).
clean-state: install
	$(BIN)/loopline down
	rm -rf .loopline
