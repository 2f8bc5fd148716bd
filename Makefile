# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) jobs/sweep_distance.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# One pytest process. Measured on 2 cores, two pytest-xdist workers were no faster: 23.7 vs ~15 min (load
# scheduling), and with the end-to-end tests kept in one worker (loadgroup) 91% done after 30 min, where one
# process takes 20-32 min. The tests are CPU-bound: each Ray Train run costs 27-39 s of CPU beyond its
# training, in process starts, imports and MLflow logging (benchmarks/bench_ray_overhead.py).
test: lint
	$(PY) -m pytest --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
