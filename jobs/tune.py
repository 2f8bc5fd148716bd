"""Search hyperparameters with Ray Tune: Optuna samples trials from a space file, ASHA stops the weak ones.

    python jobs/tune.py --space tune_spaces/protonet.yaml            # built-in data, local Ray and MLflow
    python jobs/tune.py --space tune_spaces/protonet.yaml --samples 32 train.epochs=20
    python jobs/tune.py --space tune_spaces/protonet-small.yaml --grid   # every grid point, no early stops
    python jobs/tune.py --resume                  # continue the latest interrupted study (or --resume DIR)
    ray job submit --working-dir . -- python jobs/tune.py --space tune_spaces/protonet.yaml --gpus-per-trial 0.25

Overrides (``key=value``) and flags are applied over the space's ``fixed:`` part. The study is an MLflow parent
run in experiment ``tune-<method>`` with a child run per trial; its folder (``<results>/tune/<study>``) gets the
trials table, ``best-config.yaml`` (for ``--config`` of a sweep or ``jobs/train.py``) and Optuna's plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fewshot.cli import EXIT_INTERRUPTED, STORES, job_parser, parse_override_map, run_job, stores
from fewshot.config.loading import load_config
from fewshot.data.splits import decode_splits
from fewshot.data.tables import FEWSHOT_DIRS, OFFICE_DIRS
from fewshot.errors import ConfigError
from fewshot.search import check_space, config_type, load_space


def parser() -> argparse.ArgumentParser:
    parser = job_parser(__doc__.splitlines()[0], "data-root", *STORES)
    parser.add_argument("--space", type=Path, help="search space YAML (see tune_spaces/)")
    parser.add_argument("--samples", type=int, help="number of trials (default: the space's samples)")
    parser.add_argument("--grid", action="store_true", help="run every point of the space's grid, without ASHA")
    parser.add_argument("--gpus-per-trial", type=float, help="fraction of a GPU per trial (default 0.25 on GPUs)")
    parser.add_argument("--cpus-per-trial", type=int, help="CPUs per trial (default: 1)")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                        help="continue an interrupted study (default: the latest one)")  # fmt: skip
    return parser


def main(args: argparse.Namespace) -> None:
    from fewshot.orchestration.study import Study, latest_study, new_study  # Ray and MLflow: once the flags parse
    from fewshot.orchestration.tune import run_study

    where = stores(args)
    if args.resume:
        if args.space or args.overrides or args.samples or args.grid:
            raise ConfigError("--resume continues a study as it was started: give no --space, --samples, --grid "
                              "or overrides with it")  # fmt: skip
        folder = latest_study(where.results) if args.resume == "latest" else Path(args.resume).expanduser().resolve()
        study, resume = Study.load(folder), True
    else:
        if args.space is None:
            raise ConfigError("give a search space: --space tune_spaces/<method>.yaml (or --resume)")
        if args.samples is not None and args.samples < 1:
            raise ConfigError(f"--samples must be at least 1 (got {args.samples})")
        overrides = [*([f"data.root={args.data_root}"] if args.data_root else []), *args.overrides]
        space = load_space(args.space)
        base = load_config(config_type(space.method), args.config)
        check_space(space, args.space, base)
        space = space.model_copy(update={"fixed": {**space.fixed, **parse_override_map(overrides)}})
        finetune = space.method == "finetune"  # a corrupt image: one line now, before the study and Ray start
        data = space.trial_config(space.midpoint(), base).data
        decode_splits(data, dirs=OFFICE_DIRS if finetune else FEWSHOT_DIRS, test=not finetune)
        study = new_study(args.space.resolve(), space, base, where.tracker(), where.results, args.samples, args.grid,
                          args.gpus_per_trial, args.cpus_per_trial)  # fmt: skip
        resume = False
    print(f"study {study.name}: {study.folder}  (MLflow: {study.tracking_uri}, experiment {study.experiment})")
    outcome = run_study(study, resume)
    if outcome.interrupted:
        print(f"interrupted; continue with: python jobs/tune.py --resume {study.folder}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    assert outcome.summary is not None
    print(outcome.summary.to_markdown())
    if outcome.summary.best_config is not None:
        print(f"best config: {outcome.summary.best_config}")
    print(f"trials table and plots: {study.folder}")


if __name__ == "__main__":
    run_job(main, parser())
