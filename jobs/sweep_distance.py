"""Distance functions compared at 5-way 1-shot: Euclidean, cosine and the two parametric ones.

    python jobs/sweep_distance.py                      # built-in data, local Ray, local MLflow store
    ray job submit --working-dir . -- python jobs/sweep_distance.py --seeds 3 --epochs 30

Each distance is a child run of one MLflow parent run (experiment ``distance``); the parent holds the table.
"""

from __future__ import annotations

import argparse

from fewshot.cli import run_job, sweep_parser
from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.jobs import launch
from fewshot.orchestration.sweep import Sweep, Variant

DISTANCES = ("euclidean", "cosine", "relation", "transformed")


def make_sweep(base: ExperimentConfig) -> Sweep:
    model = base.model
    variants = [
        Variant(d, base.model_copy(update={"model": model.model_copy(update={"distance": d})}), {"distance": d})
        for d in DISTANCES
    ]
    spec = base.eval_episode
    return Sweep(
        "distance", "distance-sweep", "distance", f"{spec.way}-way {spec.shot}-shot accuracy by distance", variants
    )


def main(args: argparse.Namespace) -> None:
    launch(args, make_sweep)


if __name__ == "__main__":
    run_job(main, sweep_parser(__doc__.splitlines()[0]))
