# Two doors: `make demo` runs the main job on the built-in synthetic data, `make test` runs the tests.
# `make demo-ablation` runs the demo on the data's structured-background variant with ILS on, then
# off (the demo's budget each; KIMG=K: K kimg each), and draws both runs' layers side by side.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
# Extra flags for the demo, e.g. DEMO_FLAGS="--config.train.time_budget_minutes=30".
DEMO_FLAGS ?=
# Extra flags for the comparison, e.g. COMPARE_FLAGS="--systems=ilsgan,labels4free --seeds=0,1".
COMPARE_FLAGS ?=

.PHONY: demo demo-ablation compare test test-slow venv lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'

demo: venv
	$(PY) -m ilsgan_jax.main --mode=demo --config=configs/ilsgan.py:dataset=synthetic,runlocal --workdir=$(WORKDIR) $(DEMO_FLAGS)

# Workdirs $(WORKDIR)-ablation/{on,off}_seed0 (finished ones are kept), the figure
# $(WORKDIR)-ablation/ils_on_vs_off.png, then a table of both reports.
demo-ablation: venv
	PYTHON=$(PY) bash launch/ils_ablation.sh $(WORKDIR)-ablation 0 $(DEMO_FLAGS)

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
