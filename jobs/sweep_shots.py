"""Shots compared: K = 1, 5, 10 (the same K in training and evaluation episodes).

    python jobs/sweep_shots.py                         # built-in data, local Ray, local MLflow store
    ray job submit --working-dir . -- python jobs/sweep_shots.py --seeds 3 --epochs 30

Each K is a child run of one MLflow parent run (experiment ``shots``); the parent holds the table.
"""

from __future__ import annotations

from fewshot.cli import run_job, sweep_job, sweep_parser
from fewshot.orchestration.studies import shot_sweep as make_sweep

if __name__ == "__main__":
    run_job(sweep_job(make_sweep), sweep_parser(__doc__.splitlines()[0]))
