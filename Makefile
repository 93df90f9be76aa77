# Two commands matter: `make demo` (the main job) and `make test` (the whole suite).
# Each installs what it needs first; `make install` is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
export RECSYS_HOME ?= $(CURDIR)/.recsys
export OPENBLAS_NUM_THREADS ?= 1
CODE := $(wildcard recommender serving dags clients/python/src)
PY := $(wildcard $(CODE) tests bench)

.PHONY: install demo test lint unit format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@

demo: install
	$(VENV)/bin/recsys demo

lint: install
	$(VENV)/bin/ruff check $(PY)
	$(VENV)/bin/ruff format --check $(PY)
	$(VENV)/bin/mypy $(CODE)
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest

format: install
	$(VENV)/bin/ruff format $(PY)
	$(VENV)/bin/ruff check --fix $(PY)

clean:
	rm -rf $(VENV) .recsys .pytest_cache .mypy_cache .ruff_cache
