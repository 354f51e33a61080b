# Two entry points (see README): `make demo` runs the main job, `make test` the test suite.
# Both first run `setup`, which is idempotent and re-runs only when pyproject.toml changes;
# `make test` also installs the test-only extras (SimulEval), which the core install never needs.
PYTHON ?= python
ARGS ?=

.PHONY: setup demo test lint

.setup.stamp: pyproject.toml
	bash scripts/setup.sh
	touch $@

.test-setup.stamp: .setup.stamp scripts/setup.sh
	bash scripts/setup.sh --test
	touch $@

setup: .setup.stamp

demo: .setup.stamp
	$(PYTHON) examples/train.py --config-name salm_t5 $(ARGS)

test: .test-setup.stamp
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q tests $(ARGS)

lint: .setup.stamp
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
