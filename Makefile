# Two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export MELEEWM_DATA ?= $(CURDIR)/data
export MELEEWM_TEST_REPLAYS ?= $(abspath $(CURDIR)/../shared/replays)

.PHONY: venv run test lint ui bench-parse bench-pipeline clean

venv: $(VENV)/.installed

# The CPU build of torch goes in first where no GPU is seen: the package's `torch>=` range is then
# already satisfied and pip does not pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q torch; else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: venv
	$(PY) -m meleewm_pipeline.run_all

# The browser tests (tests/browser) drive Debian's chromium; the script installs it once via apt-get.
test: venv
	bash scripts/install_browser.sh
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

ui: venv
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench-parse: venv
	$(PY) bench/parse.py

bench-pipeline: venv
	$(PY) bench/pipeline.py --repeats 3

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
