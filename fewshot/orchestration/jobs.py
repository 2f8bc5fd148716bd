"""What the sweep entry points in ``jobs/`` share: config from flags, tracker, results folder, the run."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from fewshot.cli import flag_overrides
from fewshot.config import ExperimentConfig, load_config
from fewshot.orchestration.sweep import Sweep, Variant, run_sweep
from fewshot.tracking.runs import Tracker

# Defaults that keep a sweep to minutes on a laptop CPU; flags and overrides raise them for real runs.
QUICK = ["train.epochs=5", "train.episodes_per_epoch=60", "train.val_episodes=100", "train.log_every=30"]


def base_config(args: argparse.Namespace, extra: Iterable[str] = ()) -> ExperimentConfig:
    """Quick defaults, then the sweep's own settings, the --config file, the flags, the overrides."""
    overrides = [*QUICK, *extra, *flag_overrides(args), *args.overrides]
    return load_config(ExperimentConfig, args.config, overrides)


def seeded(variants: Iterable[Variant], seeds: int) -> list[Variant]:
    """Each variant once per seed ``0..seeds-1`` (named ``<name>/seed<k>`` when there are several)."""
    out = []
    for variant in variants:
        for seed in range(seeds):
            config = variant.config.model_copy(update={"seed": seed})
            name = f"{variant.name}/seed{seed}" if seeds > 1 else variant.name
            out.append(Variant(name, config, variant.tags))
    return out


def launch(args: argparse.Namespace, make_sweep: Callable[[ExperimentConfig], Sweep]) -> None:
    """Build the sweep from the parsed flags, run it and print its table."""
    if args.results:
        os.environ["FEWSHOT_RESULTS"] = str(Path(args.results).expanduser().resolve())
    tracker = Tracker(args.tracking_uri)
    sweep = make_sweep(base_config(args))
    sweep = Sweep(sweep.study, sweep.name, sweep.by, sweep.title, seeded(sweep.variants, args.seeds))
    results = Path(os.environ.get("FEWSHOT_RESULTS", "results")).expanduser().resolve()
    comparison = run_sweep(sweep, tracker, results, args.workers)
    print(comparison.to_markdown())
    print(f"table, plot and runs: {comparison.csv.parent}  (MLflow store: {tracker.uri})")
