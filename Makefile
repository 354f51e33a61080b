# Two entry points (see README): `make demo` runs the main job, `make test` the test suite.
# Both first run `setup`, which is idempotent and re-runs only when pyproject.toml changes.
PYTHON ?= python
ARGS ?=

.PHONY: setup demo test lint

.setup.stamp: pyproject.toml
	bash scripts/setup.sh
	touch $@

setup: .setup.stamp

demo: .setup.stamp
	$(PYTHON) examples/train.py --config-name salm_t5 $(ARGS)

test: .setup.stamp
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q tests $(ARGS)

lint: .setup.stamp
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
