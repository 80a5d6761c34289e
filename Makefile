# Threadline: `make run` sets everything up and runs it on SQLite; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: run test setup system-deps lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The real parts the tests talk to: Dovecot (IMAP) and Chromium (browser). PostgreSQL is expected running.
system-deps:
	@bash scripts/install-system-deps.sh

run: setup
	$(BIN)/threadline db upgrade
	$(BIN)/threadline demo --if-empty
	$(BIN)/threadline run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup system-deps lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
