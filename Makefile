# dialgraph — every target sets up what it needs (.venv from nothing, idempotent).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# The suite mostly waits on real-time calls: 3 xdist workers on 2 cores ran it in 11 min (33 min serial).
TEST_WORKERS ?= 3

.PHONY: venv demo test serve bench lint format clean

# The stamps make a second run instant: they are rebuilt only when pyproject.toml changes.
$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "dialgraph needs Python >= 3.11 on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.stamp-base: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.stamp-offline: pyproject.toml $(VENV)/.stamp-base
	$(PIP) install -e '.[offline]'
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-offline
	$(PIP) install -e '.[dev,offline]'
	@touch $@

venv: $(VENV)/.stamp-dev

demo: $(VENV)/.stamp-offline
	$(BIN)/dialgraph demo

test: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

serve: $(VENV)/.stamp-offline
	$(BIN)/dialgraph serve --host $(HOST) --port $(PORT)

BENCHES ?= media_path graph_turns resume speech_offline speech_cloud load_calls load_whole dispatch limits redaction spoken_time turn_detector turn_taking vad_gate voice_to_voice

bench: $(VENV)/.stamp-dev
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; done

# mypy reads the four folders under their installed names through a tree of symlinks.
build/mypy/dialgraph:
	mkdir -p $@
	for d in graphs tools server telephony; do ln -sfn ../../../$$d $@/$$d; done

lint: $(VENV)/.stamp-dev build/mypy/dialgraph
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=build/mypy $(BIN)/lint-imports --no-cache

format: $(VENV)/.stamp-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data out build
