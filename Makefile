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
# process takes 23-32 min. The tests are CPU-bound (the machine is ~75% busy throughout): each Ray Train run
# costs ~22 s of CPU whatever it trains, in process starts and imports (a tiny four-run sweep: Train's
# controller ~4.5 s a run, its worker ~8 s, its four helper actors ~5.4 s), and more logical CPUs for the
# shared head only add idle workers (4 instead of 2: the same sweep took 59 s instead of 51 s).
test: lint
	$(PY) -m pytest --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
