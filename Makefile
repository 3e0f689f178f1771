# Everything a fresh clone needs: `make test` and `make demo` create their own virtual environments from the
# committed lock files (requirements/*.txt). Upgrade a lock on purpose with `make lock`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV211 := .venv-af211
BIN := $(VENV)/bin
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PYTEST_ARGS ?=
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# Compiled at install time: every Airflow process otherwise compiles ~1,000 modules on start.
export UV_COMPILE_BYTECODE := 1

.PHONY: help venv venv211 venv30 venv31 venv32 lint typecheck unit unit-af211 unit-af30 unit-af31 unit-af32 system-deps e2e test demo bench lock clean emulator

help:
	@echo "make demo   - run the example DAGs end to end against the bundled emulator"
	@echo "make test   - lint, type-check, the whole test suite on Airflow 3.3.2, unit suites on Airflow 3.2, 3.1, 3.0, 2.11"
	@echo "make bench  - benchmarks, written to BENCHMARKS.md"
	@echo "make emulator - start the Connect API emulator on 127.0.0.1:8765"
	@echo "make docs   - the documentation site, into docs/_build/html"
	@echo "make mutate - mutation testing of the money and secrets rules, into test-results/mutation/summary.md"

# uv lives in its own small venv, so the test environments hold only what the lock files say.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9

$(BIN)/python: | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON) $(VENV)

$(VENV)/.installed: requirements/airflow-3.3.txt pyproject.toml | $(BIN)/python
	$(UV) pip install -q --python $(BIN)/python -r requirements/airflow-3.3.txt
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# An environment per older Airflow line the tests also run on: $(1) is its suffix (211), $(2) its lock file's
# version (2.11). Each gets the target venv$(1) and the directory .venv-af$(1).
define older_airflow_venv
.venv-af$(1)/.installed: requirements/airflow-$(2).txt pyproject.toml | $$(UV)
	$$(UV) venv -q --allow-existing -p $$(PYTHON) .venv-af$(1)
	$$(UV) pip install -q --python .venv-af$(1)/bin/python -r requirements/airflow-$(2).txt
	$$(UV) pip install -q --python .venv-af$(1)/bin/python --no-deps -e .
	touch $$@

venv$(1): .venv-af$(1)/.installed
endef
$(eval $(call older_airflow_venv,211,2.11))
$(eval $(call older_airflow_venv,30,3.0))
$(eval $(call older_airflow_venv,31,3.1))
$(eval $(call older_airflow_venv,32,3.2))

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Debian packages the tests need (Chromium, ...): scripts/system-deps.sh lists each with its reason and prints what
# it installs before installing it.
system-deps:
	@scripts/system-deps.sh

unit: venv
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

unit-af211: venv211
	$(VENV211)/bin/python -m pytest -m "not e2e and not af3 and not af33" -p no:cacheprovider $(PYTEST_ARGS)

# Older Airflow 3 lines: the unit suite and the example DAGs run end to end; the benchmarks and the real-Airflow and
# browser tests stay on 3.3, and so do the tests of the 3.3 task state store.
OLDER_AF3_MARKERS := not e2e and not bench and not af33

unit-af30 unit-af31 unit-af32: unit-af%: venv%
	.venv-af$*/bin/python -m pytest -m "$(OLDER_AF3_MARKERS)" -p no:cacheprovider $(PYTEST_ARGS)

# The Airflow 2.11 browser tests run a 2.11 webserver from $(VENV211) and drive it from $(VENV).
e2e: venv venv211 system-deps
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

# The documentation site (docs/, Sphinx) into docs/_build/html. Warnings are errors and every cross-reference must
# resolve (-W -n); -E re-reads every page, so a warning is never hidden by an incremental build.
.PHONY: docs
$(VENV)/.docs-installed: requirements/docs.txt $(VENV)/.installed
	$(UV) pip install -q --python $(BIN)/python -r requirements/airflow-3.3.txt -r requirements/docs.txt
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/python -m sphinx -W --keep-going -n -E -q -b html docs docs/_build/html

test: lint typecheck system-deps venv211
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) docs
	$(MAKE) unit-af32 unit-af31 unit-af30 unit-af211
	$(MAKE) dist

demo: venv
	$(BIN)/python -m dags_examples.demo

bench: venv system-deps
	$(BIN)/python -m benchmarks.run

emulator: venv
	$(BIN)/truconnect-emulator --host 127.0.0.1 --port 8765

# Release artefacts: wheel and sdist from a pinned build backend (requirements/build.txt), `twine check`, the
# pre-commit configuration validated, then scripts/wheel_smoke/run.py checks the files in both and installs the wheel
# (not `-e .`) with the Airflow 3.3 lock into a fresh, throw-away venv to run the provider from there.
VENV_DIST := .venv-dist

$(VENV_DIST)/.installed: requirements/dist-tools.txt | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON) $(VENV_DIST)
	$(UV) pip install -q --python $(VENV_DIST)/bin/python -r requirements/dist-tools.txt
	touch $@

.PHONY: dist
dist: $(VENV_DIST)/.installed
	$(UV) build -q -p $(PYTHON) --clear --build-constraints requirements/build.txt --out-dir dist
	$(VENV_DIST)/bin/twine check --strict dist/*.whl dist/*.tar.gz
	$(VENV_DIST)/bin/pre-commit validate-config .pre-commit-config.yaml
	$(VENV_DIST)/bin/python scripts/wheel_smoke/run.py --uv $(UV) --python $(PYTHON) dist

# Shared development hooks (.pre-commit-config.yaml): they run ruff and mypy from .venv, the detectors from .venv-dist.
.PHONY: pre-commit
pre-commit: venv $(VENV_DIST)/.installed
	$(VENV_DIST)/bin/pre-commit install

# Mutation testing of the rules that guard money and secrets: client/, triggers/ and the order paths of operators/
# (scripts/mutate.py). Private copies outside the tree are mutated, at the lowest priority, each mutant running only the
# tests that reach it, fastest first; the score and the surviving mutants go to test-results/mutation/summary.md.
# Slow, so `make test` does not run it: about 85 minutes on 2 shared cores (triggers 15, order paths 23, and the
# client's money functions stopped by the 45-minute time box after about three quarters of their mutants). Examples:
# MUTATE_ARGS="--areas triggers" (one area), MUTATE_ARGS="--areas client --survivors" (only the last survivors).
VENV_MUTATE := .venv-mutate
MUTATE_ARGS ?= --time-limit 45

$(VENV_MUTATE)/.installed: requirements/airflow-3.3.txt requirements/mutate.txt pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON) $(VENV_MUTATE)
	$(UV) pip install -q --python $(VENV_MUTATE)/bin/python -r requirements/airflow-3.3.txt -r requirements/mutate.txt
	$(UV) pip install -q --python $(VENV_MUTATE)/bin/python --no-deps -e .
	touch $@

.PHONY: mutate
mutate: $(VENV_MUTATE)/.installed
	nice -n 19 $(VENV_MUTATE)/bin/python scripts/mutate.py $(MUTATE_ARGS)

lock: $(UV)
	$(UV) pip compile -q -p 3.11 --upgrade requirements/airflow-3.3.in -o requirements/airflow-3.3.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/docs.in -c requirements/airflow-3.3.txt -o requirements/docs.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/mutate.in -c requirements/airflow-3.3.txt -o requirements/mutate.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/airflow-3.2.in -o requirements/airflow-3.2.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/airflow-3.1.in -o requirements/airflow-3.1.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/airflow-3.0.in -o requirements/airflow-3.0.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/airflow-2.11.in -o requirements/airflow-2.11.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/build.in -o requirements/build.txt
	$(UV) pip compile -q -p 3.11 --upgrade requirements/dist-tools.in -o requirements/dist-tools.txt

clean:
	rm -rf $(VENV) .venv-af* $(TOOLS) .pytest_cache .mypy_cache .ruff_cache test-results docs/_build
