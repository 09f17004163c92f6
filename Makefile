PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/corral demo

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/rpc.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/integration.py
	$(BIN)/python bench/fuzz.py
	$(BIN)/python bench/chaos.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/adaptive.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

# --strict turns every mkdocs/mkdocstrings warning into a failure. NO_MKDOCS_2_WARNING
# silences mkdocs-material's end-of-life banner (printed, not a build warning).
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info
