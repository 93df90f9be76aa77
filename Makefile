# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Each installs what it needs first; `make install` is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
export RECSYS_HOME ?= $(CURDIR)/.recsys
export OPENBLAS_NUM_THREADS ?= 1
CODE := $(wildcard recommender serving dags clients/python/src infra/airflow)
PY := $(wildcard $(CODE) tests bench)

# The suite on every core (pytest-xdist; tests that share a fixture's work run on one worker, see
# tests/conftest.py). `make test-fast` leaves out the end-to-end stack tests (tests/e2e).
PYTEST := $(VENV)/bin/pytest -n $(or $(TEST_WORKERS),auto) --dist loadscope --no-loadscope-reorder

.PHONY: install demo test suite test-fast lint format clean

install: $(VENV)/.installed

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as on these machines), a venv without .pyc files
# compiles mlflow, airflow, scipy... from source in every process: each Airflow task, CLI call and server
# paid about 5 s more to start (importing the pipeline took 9-12 s instead of 4).
$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --all-extras --compile-bytecode
	@touch $@

demo: install
	$(VENV)/bin/recsys demo

lint: install
	$(VENV)/bin/ruff check $(PY)
	$(VENV)/bin/ruff format --check $(PY)
	$(VENV)/bin/mypy $(CODE)
	$(VENV)/bin/lint-imports

# The linters and the suite side by side (lint is one core's work for half a minute, mostly mypy, while the
# suite leaves a core idle about a third of the time); output is printed a line at a time.
test: install
	@$(MAKE) --no-print-directory -j2 --output-sync=line lint suite

suite: install
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not e2e"

format: install
	$(VENV)/bin/ruff format $(PY)
	$(VENV)/bin/ruff check --fix $(PY)

clean:
	rm -rf $(VENV) .recsys .pytest_cache .mypy_cache .ruff_cache
