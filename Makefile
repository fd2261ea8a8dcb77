# Two entry points on a fresh machine: `make demo` and `make test`. Everything else is set-up they call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint unit system-deps venv clean bench

$(STAMP): pyproject.toml setup.py src/coffer/_chunker.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m compileall -q src  # as a regular install does; PYTHONDONTWRITEBYTECODE=1 would leave none
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	scripts/install-system-deps.sh

demo: system-deps $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test: system-deps $(STAMP) lint
	scripts/run-tests.sh $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q -m 'not slow' tests/unit $(PYTEST_ARGS)

bench: system-deps $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info src/coffer/*.so .mypy_cache .ruff_cache .pytest_cache
