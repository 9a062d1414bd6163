# A newcomer's entry points: `make demo`, `make test`, `make lint`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The dev setup: the operator, the testbed (emulators and demo) and the test tools.
STAMP := $(VENV)/.installed
# checkov lives in its own venv: its ~70 dependencies would pin packaging and others in the
# project's. Pinned, so that a new checkov release cannot turn `make lint` red on its own.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
RENDERED := build/rendered
# What the demo needs and nothing more: the operator and the testbed.
DEMO_STAMP := $(VENV)/.demo-installed
# Test processes in parallel: tests share nothing (ports, tmp dirs and emulators are their
# own), and most of an end-to-end test's time is spent waiting for token lifetimes. Tests are
# handed out two at a time, longest first (tests/conftest.py), so no process idles at the end.
TEST_JOBS ?= 8

.PHONY: install test lint demo chaos bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml testbed/pyproject.toml | $(BIN)/python
	@echo "Installing lucidgrant, lucidgrant-testbed and the test tools into $(VENV) (a minute or two)"
	$(BIN)/pip install --progress-bar on -e '.[dev]' -e ./testbed
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml testbed/pyproject.toml | $(BIN)/python
	@echo "Installing lucidgrant and lucidgrant-testbed into $(VENV) (about 20 s)"
	$(BIN)/pip install --progress-bar on -e . -e ./testbed
	touch $(DEMO_STAMP)

$(CHECKOV_STAMP):
	test -d $(CHECKOV_VENV) || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

install: $(STAMP)

test: $(STAMP)
	tests/setup-tools.sh
	# Bytecode caching on even where the environment turns it off: each test process would
	# otherwise recompile and re-rewrite every test module's asserts (10 s of CPU each).
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n $(TEST_JOBS) --dist load --maxschedchunk 2

lint: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile testbed/Dockerfile
	rm -rf $(RENDERED) && $(BIN)/python -m tests.deploy.render $(RENDERED)
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes dockerfile \
		-f $(RENDERED)/deploy.yaml -f $(RENDERED)/namespaced.yaml -f Dockerfile

demo: $(DEMO_STAMP)
	$(BIN)/lucidgrant-demo

chaos: $(STAMP)
	$(BIN)/pytest -q -m chaos -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench outage --grants 1000,10000 --results bench/RESULTS.md
	$(BIN)/python -m bench secrets --unrelated 0,20000 --results bench/RESULTS.md

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(RENDERED) .pytest_cache .mypy_cache .ruff_cache
