VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export MUJOCO_GL ?=
export OMP_NUM_THREADS ?= 1
# pytest-xdist workers for `make test` (one per core of the 2-core reference machine; `make test TEST_WORKERS=0` runs serially)
TEST_WORKERS ?= 2

.PHONY: setup run test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The README's main job: a planning agent on a learned model swings Pendulum-v1 up (about 2 min on 2 cores).
run: $(STAMP)
	$(VENV)/bin/mbrl run-demo

test: $(STAMP)
	$(PY) -m pytest -q -x -n $(TEST_WORKERS) --dist loadgroup --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -q -m "" -n $(TEST_WORKERS) --dist loadgroup --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check mbrl envs agents tests scripts
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) scripts/bench/models.py
	$(PY) scripts/bench/sac.py

clean:
	rm -rf $(VENV) runs
