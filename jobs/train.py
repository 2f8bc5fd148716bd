"""Train and evaluate one few-shot model in this process (no Ray): the quickest way to try a config.

    python jobs/train.py                                  # ProtoNet, built-in data, 5-way 1-shot
    python jobs/train.py --config my.yaml model.distance=cosine train.epochs=30 data.root=~/hw4_data
    python jobs/train.py method=hallucination hallucination.m=50 train_episode.way=30
    python jobs/train.py method=afhn afhn.pretrain_epochs=5

Writes config.yaml, last.pt/best.pt and predictions.csv (and, for the hallucinating methods, tsne.png) to
output_dir (default results/train-<time>); running again with the same output_dir resumes from last.pt, and
--restart replaces a run of another config there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fewshot.cli import job_parser, run_job
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.paths import check_writable
from fewshot.training.run import run
from fewshot.viz.tsne import checkpoint_tsne


def main(args: argparse.Namespace) -> None:
    config = load_config(ExperimentConfig, args.config, args.overrides)
    run_dir = (config.output_dir or Path("results") / time.strftime("train-%Y%m%d-%H%M%S")).resolve()
    check_writable(run_dir, "output_dir")  # before the data is read, without making the folder
    result = run(config, run_dir, restart=args.restart)
    assert result.outcome is not None and result.outcome.protocol is not None
    print(f"accuracy ({config.eval_episode.way}-way {config.eval_episode.shot}-shot): {result.outcome.score}")
    print(result.outcome.protocol.describe())
    colour = result.outcome.baselines.get("colour_baseline")
    if colour is not None:
        print(f"nearest-mean-colour baseline on the same episodes: {colour}")
    print(f"best epoch {result.fit.best_epoch}; checkpoints and predictions in {run_dir}")
    if config.method != "protonet":
        print(f"plot: {checkpoint_tsne(result.fit.best_checkpoint, run_dir / 'tsne.png')}")


if __name__ == "__main__":
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--restart", action="store_true", help="replace the run in output_dir instead of resuming")
    run_job(main, parser)
