# Two doors: `make demo` runs the main job on the built-in synthetic data, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
# Extra flags for the demo, e.g. DEMO_FLAGS="--config.train.time_budget_minutes=30".
DEMO_FLAGS ?=
# Extra flags for the comparison, e.g. COMPARE_FLAGS="--systems=ilsgan,labels4free --seeds=0,1".
COMPARE_FLAGS ?=

.PHONY: demo compare test test-slow venv lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'

demo: venv
	$(PY) -m ilsgan_jax.main --mode=demo --config=configs/ilsgan.py:dataset=synthetic,runlocal --workdir=$(WORKDIR) $(DEMO_FLAGS)

compare: venv
	$(PY) launch/compare_systems.py --workdir=runs/compare $(COMPARE_FLAGS)

test: venv
	$(PY) -m pytest -m 'not slow' tests

test-slow: venv
	$(PY) -m pytest -m slow tests

lint: venv
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check ilsgan_jax configs tests launch

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
