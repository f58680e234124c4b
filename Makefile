# The two commands: `make demo` and `make test`. Each builds its own .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The folders that install as followup.<name> (pyproject.toml's package-dir).
SUBPACKAGES := config tasks worker simulator cli

.PHONY: demo dist test test-compat lint typecheck-tree bench bench-more bench-simulator bench-keepalive bench-pacing bench-throughput bench-chaos clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "followup needs Python 3.11 or newer" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo needs the simulator extra (aiohttp); the tests need everything.
$(VENV)/.installed-demo: $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install --quiet -e '.[demo]'
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/followup demo

# A wheel to install elsewhere: dist/followup-<version>-py3-none-any.whl (pip install it,
# with [flower] for Flower). python -m build, in a virtualenv of its own.
dist: $(BIN)/python
	$(BIN)/pip install --quiet build
	rm -rf build/lib build/bdist.*  # what an older checkout built must not ship again
	$(BIN)/python -m build --wheel --outdir dist .

# mypy cannot follow setuptools' editable import hook; it reads the package through links
# laid out as it installs (build/typecheck/followup/<sub-package> -> <sub-package>/).
typecheck-tree:
	@mkdir -p build/typecheck/followup
	@ln -sfn ../../../followup/__init__.py build/typecheck/followup/__init__.py
	@ln -sfn ../../../followup/py.typed build/typecheck/followup/py.typed
	@for pkg in $(SUBPACKAGES); do ln -sfn ../../../$$pkg build/typecheck/followup/$$pkg; done

lint: $(VENV)/.installed-dev typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -n 3 --durations=15

# The producer's inline task message against each Celery/kombu the dependencies allow
# (a virtualenv each, from the package index; a few minutes).
test-compat: $(BIN)/python
	PYTHON=$(PYTHON) bash tests/compat.sh

# The speed figures beside their baselines (naive worker, bare send_task, direct POSTs):
# about four minutes. The others measure one concern each, and take minutes of their own.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/speed.py

bench-more: bench-simulator bench-keepalive bench-pacing bench-throughput

bench-simulator: $(VENV)/.installed-dev
	$(BIN)/python bench/simulator_throughput.py 5 16

bench-keepalive: $(VENV)/.installed-dev
	$(BIN)/python bench/keepalive.py 2000

bench-pacing: $(VENV)/.installed-dev
	$(BIN)/python bench/pacing.py 100 5

bench-throughput: $(VENV)/.installed-dev
	$(BIN)/python bench/throughput.py 2000 1 8

bench-chaos: $(VENV)/.installed-dev
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
