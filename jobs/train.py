"""Train and evaluate one few-shot model in this process (no Ray): the quickest way to try a config.

    python jobs/train.py                                  # ProtoNet, built-in data, 5-way 1-shot
    python jobs/train.py --config my.yaml model.distance=cosine train.epochs=30 data.root=~/hw4_data
    python jobs/train.py method=hallucination hallucination.m=50 train_episode.way=30
    python jobs/train.py method=afhn afhn.pretrain_epochs=5

Writes config.yaml, last.pt/best.pt and predictions.csv (and, for the hallucinating methods, tsne.png) to
output_dir (default results/train-<time>);
running again with the same output_dir resumes from last.pt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fewshot.cli import job_parser, run_job
from fewshot.config import ExperimentConfig, load_config
from fewshot.training.experiment import run_experiment


def main(args: argparse.Namespace) -> None:
    config = load_config(ExperimentConfig, args.config, args.overrides)
    run_dir = config.output_dir or Path("results") / time.strftime("train-%Y%m%d-%H%M%S")
    result = run_experiment(config, run_dir.resolve())
    print(f"val accuracy ({config.eval_episode.way}-way {config.eval_episode.shot}-shot): {result.score}")
    print(f"nearest-mean-colour baseline on the same episodes: {result.colour_baseline}")
    print(f"best epoch {result.fit.best_epoch}; checkpoints and predictions in {run_dir.resolve()}")
    for plot in result.plots:
        print(f"plot: {plot}")


if __name__ == "__main__":
    run_job(main, job_parser(__doc__.splitlines()[0]))
