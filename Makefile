# The README's two commands:  `make demo` (main job on the embedded default) and `make test`.
# Each creates the virtual environment in $(VENV) first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
# Tests emulate 8 CPU devices. Tiers (docs/testing.md): the default tier (`make test`) leaves
# out the tests marked `slow` or `heavy`; `make test-slow` runs the `slow` ones (CI runs both);
# `make test-all` runs every test, `heavy` ones included.
PYTEST_ARGS ?= -m "not slow and not heavy"
PYTEST_SLOW_ARGS ?= -m "slow and not heavy"

.PHONY: venv demo reproduce-mini test test-slow test-all clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	# t5 without its declared dependencies, which clash with seqio and tensorflow-datasets.
	$(PY) -m pip install --quiet --no-deps -c $(CONSTRAINTS) t5
	$(PY) -c "import seqio, t5.data.preprocessors, t5.evaluation.metrics, codereason_jax"
	touch $@

# Pre-trains the tiny model on the embedded corpora; rerunning resumes (or finishes at once).
demo: venv
	$(PY) -m codereason_jax.train --gin_file=gin/runs/demo_cpu.gin --run_dir=runs/demo_cpu

# The whole experiment matrix at mini scale on the embedded default, with its report;
# rerunning resumes.
reproduce-mini: venv
	$(PY) -m codereason_jax.reproduce --scale=mini

test: venv
	$(PY) -m pytest $(PYTEST_ARGS) tests

# CI's second stage: multi-host training, kills at random steps, the micro reproduction, ...
test-slow: venv
	$(PY) -m pytest $(PYTEST_SLOW_ARGS) tests

test-all: venv
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) build *.egg-info
