"""Shots compared: K = 1, 5, 10 (the same K in training and evaluation episodes).

    python jobs/sweep_shots.py                         # built-in data, local Ray, local MLflow store
    ray job submit --working-dir . -- python jobs/sweep_shots.py --seeds 3 --epochs 30

Each K is a child run of one MLflow parent run (experiment ``shots``); the parent holds the table.
"""

from __future__ import annotations

from fewshot.cli import run_job, sweep_job, sweep_parser
from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.sweep import Sweep, Variant

SHOTS = (1, 5, 10)


def with_shot(base: ExperimentConfig, shot: int) -> ExperimentConfig:
    return base.model_copy(
        update={
            "train_episode": base.train_episode.model_copy(update={"shot": shot}),
            "eval_episode": base.eval_episode.model_copy(update={"shot": shot}),
        }
    )


def make_sweep(base: ExperimentConfig) -> Sweep:
    variants = [Variant(f"{k}-shot", with_shot(base, k), {"shot": str(k)}) for k in SHOTS]
    title = f"{base.eval_episode.way}-way accuracy by shot (train shot = test shot)"
    return Sweep(study="shots", name="shot-sweep", group_by="shot", title=title, variants=variants)


if __name__ == "__main__":
    run_job(sweep_job(make_sweep), sweep_parser(__doc__.splitlines()[0]))
