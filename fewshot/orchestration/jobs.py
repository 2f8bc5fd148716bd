"""What the entry points in ``jobs/`` share: config from flags, tracker, results folder, the run."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from fewshot.cli import add_run_flags, flag_overrides, job_parser
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig, PretrainConfig
from fewshot.data.splits import check_splits
from fewshot.orchestration.sweep import Sweep, Variant, run_sweep
from fewshot.orchestration.transfer import pretrain_backbone
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
    results = results_folder(args)
    sweep = make_sweep(base_config(args))
    sweep = Sweep(sweep.study, sweep.name, sweep.by, sweep.title, seeded(sweep.variants, args.seeds))
    for config in {variant.config.data: variant.config for variant in sweep.variants}.values():
        check_splits(config.data, config.train_episode)
    tracker = Tracker(args.tracking_uri)
    comparison = run_sweep(sweep, tracker, results, args.workers)
    print(comparison.to_markdown())
    print(f"table, plot and runs: {comparison.csv.parent}  (MLflow store: {tracker.uri})")


# Pre-training and fine-tuning defaults that finish on a laptop CPU (ResNet-50 at 64 px, short schedules);
# real runs raise them: data.image_size=84 / 128, train.epochs=..., train.batch_size=256, --workers N on GPUs.
PRETRAIN_QUICK = ["train.epochs=6", "train.val_episodes=50", "train.log_every=20"]
FINETUNE_QUICK = ["train.epochs=10", "train.log_every=10"]


def transfer_parser(description: str) -> argparse.ArgumentParser:
    """:func:`job_parser` plus the flags of the pre-training and fine-tuning jobs."""
    parser = job_parser(description)
    parser.add_argument("--data-root", help="dataset root (default: the built-in dataset)")
    parser.add_argument("--epochs", type=int, help="training epochs")
    parser.add_argument("--batch-size", type=int, help="global mini-batch size (split between workers)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (images are resized to it)")
    add_run_flags(parser)
    return parser


def transfer_flags(args: argparse.Namespace, prefix: str = "") -> list[str]:
    """The shared flags as overrides (``prefix`` selects the ``--pretrain-*`` variants of the settings job)."""
    flags = {"data.root": args.data_root,
             "train.epochs": getattr(args, f"{prefix}epochs"),
             "train.batch_size": args.batch_size,
             "data.image_size": getattr(args, f"{prefix}image_size")}  # fmt: skip
    return [f"{key}={value}" for key, value in flags.items() if value is not None]


def results_folder(args: argparse.Namespace) -> Path:
    """``--results`` (also exported as ``$FEWSHOT_RESULTS`` for the workers), else ``$FEWSHOT_RESULTS``/results."""
    if args.results:
        os.environ["FEWSHOT_RESULTS"] = str(Path(args.results).expanduser().resolve())
    return Path(os.environ.get("FEWSHOT_RESULTS", "results")).expanduser().resolve()


def launch_pretraining(args: argparse.Namespace, method: str) -> None:
    """Pre-train a backbone with ``method`` as the flags say; print where its ``backbone.pt`` is."""
    results = results_folder(args)
    overrides = [f"method={method}", *PRETRAIN_QUICK, *transfer_flags(args), *args.overrides]
    config = load_config(PretrainConfig, args.config, overrides)
    check_splits(config.data)
    tracker = Tracker(args.tracking_uri)
    backbone = pretrain_backbone(config, tracker, results, num_workers=args.workers)
    print(f"{method} backbone: {backbone}  (MLflow store: {tracker.uri})")
    print(f"fine-tune it: python jobs/finetune_office.py --{'ssl' if method == 'byol' else 'supervised'} {backbone}")
