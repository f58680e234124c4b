# The two commands: `make demo` and `make test`. Each builds its own .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench bench-simulator bench-enqueue bench-throughput bench-chaos clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "followup needs Python 3.11 or newer" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/followup demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench-simulator: $(VENV)/.installed-dev
	$(BIN)/python bench/simulator_throughput.py

bench-enqueue: $(VENV)/.installed-dev
	$(BIN)/python bench/enqueue.py

bench-throughput: $(VENV)/.installed-dev
	$(BIN)/python bench/throughput.py 2000 1 8
	$(BIN)/python bench/throughput.py 2000 2 8

bench: bench-simulator bench-enqueue bench-throughput bench-chaos

bench-chaos: $(VENV)/.installed-dev
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
