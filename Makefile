# Two commands a newcomer runs: `make demo` (install + main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CIFAR-10 offline copy used by CI and tests when it exists next to the checkout.
SHARED_DATA := $(abspath ../shared/datasets)
export REM_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/cifar-10-batches-py),$(SHARED_DATA),)

.PHONY: venv test test-fast demo docs lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# the full suite (~3 min on two cores); test-fast leaves out the tests marked slow (end-to-end runs)
test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

demo: venv
	@echo "rem demo: starting (importing torch takes a second or two)"
	$(VENV)/bin/rem demo

# the documentation site (MkDocs + Material + mkdocstrings) into site/; the test suite runs the same build
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# style (ruff format), errors, imports and complexity (mccabe, see pyproject.toml)
lint: venv
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/ruff check src tests benchmarks examples

format: venv
	$(VENV)/bin/ruff format src tests benchmarks examples
	$(VENV)/bin/ruff check --fix src tests benchmarks examples

clean:
	rm -rf $(VENV) build dist site *.egg-info src/*.egg-info
