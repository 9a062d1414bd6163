# A newcomer's entry points: `make demo`, `make test`, `make lint`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov lives in its own venv: its ~70 dependencies would pin packaging and others in the
# project's. Pinned, so that a new checkov release cannot turn `make lint` red on its own.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
RENDERED := build/rendered

.PHONY: install test lint demo chaos bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CHECKOV_STAMP):
	test -d $(CHECKOV_VENV) || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	rm -rf $(RENDERED) && $(BIN)/python -m tests.deploy.render $(RENDERED)
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes dockerfile \
		-f $(RENDERED)/deploy.yaml -f $(RENDERED)/namespaced.yaml -f Dockerfile

demo: $(STAMP)
	$(BIN)/lucidgrant demo

chaos: $(STAMP)
	$(BIN)/pytest -q -m chaos -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(RENDERED) .pytest_cache .mypy_cache .ruff_cache
