# earshot: `make setup` once, `make test` for everything CI runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test lint serve bench clean

setup: $(STAMP)

# Reinstall when the dependencies change; the package itself is editable.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing earshot with its test dependencies"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[test]'
	@touch $@

test: setup lint
	@echo "==> tests (real server, real model; random order)"
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

serve: setup
	$(PY) -m earshot.server

bench: setup
	$(PY) bench/server_latency.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache src/*.egg-info
