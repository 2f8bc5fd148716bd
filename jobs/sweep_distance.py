"""Distance functions compared at 5-way 1-shot: Euclidean, cosine and the two parametric ones.

    python jobs/sweep_distance.py                      # built-in data, local Ray, local MLflow store
    ray job submit --working-dir . -- python jobs/sweep_distance.py --seeds 3 --epochs 30

Each distance is a child run of one MLflow parent run (experiment ``distance``); the parent holds the table.
"""

from __future__ import annotations

from fewshot.cli import run_job, sweep_job, sweep_parser
from fewshot.orchestration.studies import distance_sweep as make_sweep

if __name__ == "__main__":
    run_job(sweep_job(make_sweep), sweep_parser(__doc__.splitlines()[0]))
