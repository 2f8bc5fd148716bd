"""The jobs' command line: every flag defined once, the quick defaults of the built-in data, and what a job
prints. User mistakes end as one line (``error: ...``, exit status 2) instead of a traceback.

Where runs go is decided here, once, and passed on explicitly: ``--results`` (else ``$FEWSHOT_RESULTS``, else
``./results``) holds run folders and the local MLflow store; ``--tracking-uri`` (else ``$MLFLOW_TRACKING_URI``,
else ``sqlite:///<results>/mlflow.db``) is the MLflow store.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fewshot.config.loading import load_config, parse_override
from fewshot.config.schema import ExperimentConfig, PretrainConfig
from fewshot.errors import FewshotError
from fewshot.paths import absolute_uri, check_writable, default_tracking_uri
from fewshot.runtime import tune_allocator

# Ray, MLflow and the data pipeline are imported where a job first needs them, not here: a job that never
# uses them (predict, train, tsne, prepare_data) does not pay their ~2 s of imports, nor does a usage error; the
# Ray jobs import Ray once their flags, config (and data, where a job checks it first) are right.
if TYPE_CHECKING:
    from fewshot.orchestration.studies import Sweep
    from fewshot.orchestration.sweep import Sizing
    from fewshot.tracking.runs import Tracker

SweepMaker = Callable[[ExperimentConfig], "Sweep"]  # a study's sweep, built from the job's base config

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Defaults that keep a sweep to minutes on a laptop CPU; flags and overrides raise them for real runs.
QUICK = ["train.epochs=5", "train.episodes_per_epoch=60", "train.val_episodes=100", "train.log_every=30"]
# Pre-training and fine-tuning sized for a laptop CPU (the CPU setting of settings A-E): a ResNet-18 at 64 px,
# supervised images uncropped (a random crop cuts the built-in classes' constellations apart: the probe of a
# 6-epoch supervised pre-training fell from 60 to 28 with crop scale 0.35), Adam at 1e-3 with the classifier
# at 10x (a linear layer on frozen features at 1e-3 had not moved in 20 epochs). Real runs set arch=resnet50,
# data.image_size=84 / 128, train.epochs=..., train.batch_size=256, --workers N on GPUs.
CPU_BACKBONE = ["arch=resnet18", "train.optim.lr=1e-3", "train.crop_scale=null"]
PRETRAIN_QUICK = [*CPU_BACKBONE, "train.epochs=6", "train.val_episodes=50", "train.log_every=20"]
# Supervised pre-training gets 12 epochs: at 6 its validation probe was still rising at the last epoch (31, 46,
# 57, 59 % over epochs 3-6). BYOL keeps 6: its probe stayed at the untrained floor (20 %) whatever was tried.
QUICK_BY_METHOD = {"supervised": ["train.epochs=12"], "byol": []}
FINETUNE_QUICK = [*CPU_BACKBONE, "lr_scale.classifier=10", "train.epochs=20", "train.log_every=10"]


@dataclass(frozen=True)
class Stores:
    """Where a job's runs go: the results folder and the MLflow tracking URI."""

    results: Path
    tracking_uri: str

    def tracker(self) -> Tracker:
        from fewshot.tracking.runs import Tracker

        return Tracker(self.tracking_uri)


# Every flag a job may take, defined once; each job picks its own by name (``job_parser(description, *names)``).
FLAGS: dict[str, dict[str, Any]] = {
    "data-root": {
        "type": Path,
        "help": "dataset root (default: the built-in data; given a checkpoint, the data it trained on)",
    },
    "epochs": {"type": int, "help": "training epochs (per run)"},
    "episodes": {"type": int, "help": "training episodes per epoch"},
    "train-way": {"type": int, "help": "classes per training episode"},
    "batch-size": {"type": int, "help": "global mini-batch size (split between workers)"},
    "image-size": {"type": int, "help": "image side in pixels (images are resized to it)"},
    "seeds": {"type": int, "help": "seeds per configuration, table: mean ± std (default 1; reproduce: the profile's)"},
    "workers": {"type": int, "default": 1, "help": "Ray Train workers per run (data parallel)"},
    "max-concurrent": {"type": int, "help": "runs training at once, at most (default: as many as the cluster holds)"},
    "gpus-per-run": {"type": float, "help": "fraction of a GPU per run worker (default 0.25 on a GPU cluster)"},
    "cpus-per-run": {"type": int, "help": "CPUs per run (default: the cluster's CPUs shared by the runs in flight)"},
    "results": {
        "type": Path,
        "help": "folder for runs and the local MLflow store (default: $FEWSHOT_RESULTS or ./results)",
    },
    "tracking-uri": {"help": "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///<results>/mlflow.db)"},
    "checkpoint": {"type": Path, "required": True, "help": "best.pt or last.pt of a training run"},
    "device": {"default": "auto", "choices": ("auto", "cpu", "cuda")},
}
STORES = ("results", "tracking-uri")
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EISDIR)  # where runs are kept: see stores()
SIZING = ("workers", "max-concurrent", "gpus-per-run", "cpus-per-run")  # how runs are sized: see sizing()


def job_parser(description: str, *flags: str, overrides: bool = True) -> argparse.ArgumentParser:
    """An argument parser with ``-q``, the named ``flags``, and (``overrides``) ``--config FILE`` with trailing
    ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(description=description)
    if overrides:
        parser.add_argument("--config", metavar="FILE", help="YAML config; overrides below are applied after it")
        parser.add_argument(
            "overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.epochs=3"
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    for name in flags:
        parser.add_argument(f"--{name}", **FLAGS[name])
    return parser


def sweep_parser(description: str) -> argparse.ArgumentParser:
    """The flags every sweep shares; ``--data-root``, ``--epochs``... are shortcuts for config overrides."""
    parser = job_parser(description, "data-root", "epochs", "episodes", "train-way", "seeds", *SIZING, *STORES)
    parser.add_argument(
        "--resume", action="store_true", help="continue the latest sweep of this kind: train only what is missing"
    )
    return parser


def transfer_parser(description: str) -> argparse.ArgumentParser:
    """The flags of the pre-training and fine-tuning jobs."""
    return job_parser(description, "data-root", "epochs", "batch-size", "image-size", *SIZING, *STORES)


def stores(args: argparse.Namespace) -> Stores:
    """The results folder and tracking URI the flags (or their environment defaults) name, made absolute."""
    results = (args.results or Path(os.environ.get("FEWSHOT_RESULTS", "results"))).expanduser().resolve()
    check_writable(results, "results folder")  # before any work: not a traceback after the first run
    uri = absolute_uri(args.tracking_uri) if args.tracking_uri else default_tracking_uri(results)
    return Stores(results, uri)


def sizing(args: argparse.Namespace) -> Sizing:
    """How big each run is and how many train at once, from the flags."""
    from fewshot.orchestration.sweep import Sizing

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise FewshotError(f"--max-concurrent {args.max_concurrent}: give at least 1")
    return Sizing(args.workers, args.gpus_per_run, args.cpus_per_run, args.max_concurrent)


def sweep_config(args: argparse.Namespace, extra: Iterable[str] = ()) -> ExperimentConfig:
    """Quick defaults, then the sweep's own settings, the --config file, the flags, the overrides."""
    keys = ("data.root", "train.epochs", "train.episodes_per_epoch", "train_episode.way")
    flags = dict(zip(keys, (args.data_root, args.epochs, args.episodes, args.train_way), strict=True))
    overrides = [*QUICK, *extra, *_as_overrides(flags), *args.overrides]
    return load_config(ExperimentConfig, args.config, overrides)


def transfer_flags(args: argparse.Namespace, prefix: str = "") -> list[str]:
    """The shared flags as overrides (``prefix`` selects the ``--pretrain-*`` variants of the settings job)."""
    keys = ("data.root", "train.epochs", "train.batch_size", "data.image_size")
    values = (args.data_root, getattr(args, f"{prefix}epochs"), args.batch_size, getattr(args, f"{prefix}image_size"))
    flags = dict(zip(keys, values, strict=True))
    return _as_overrides(flags)


def sweep_job(*makers: SweepMaker) -> Callable[[argparse.Namespace], None]:
    """A sweep job's ``main``: build each sweep from the flags, run every seed of all of them at once, print
    their tables."""

    def main(args: argparse.Namespace) -> None:
        where, base = stores(args), sweep_config(args)
        sweeps = [make(base).seeded(args.seeds or 1) for make in makers]
        from fewshot.orchestration.sweep import run_sweeps  # Ray and MLflow: once the flags and config are right

        for comparison in run_sweeps(sweeps, where.tracker(), where.results, sizing(args), args.resume):
            print(comparison.to_markdown())
            print(f"table, plot and runs: {comparison.csv.parent}  (MLflow store: {where.tracking_uri})")

    return main


def pretraining_job(method: str) -> Callable[[argparse.Namespace], None]:
    """A pre-training job's ``main``: pre-train a backbone with ``method``, print where its ``backbone.pt`` is."""

    def main(args: argparse.Namespace) -> None:
        from fewshot.data.splits import decode_splits

        where = stores(args)
        overrides = [
            f"method={method}",
            *PRETRAIN_QUICK,
            *QUICK_BY_METHOD[method],
            *transfer_flags(args),
            *args.overrides,
        ]
        config = load_config(PretrainConfig, args.config, overrides)
        decode_splits(config.data)  # a corrupt image: one line now, before Ray starts
        from fewshot.orchestration.sweep import Launch  # Ray and MLflow: once the flags, config and data are right
        from fewshot.orchestration.transfer import pretrain_backbones

        launch = Launch(where.tracker(), where.results, sizing(args))
        (backbone,) = pretrain_backbones([config], launch)
        print(f"{method} backbone: {backbone}  (MLflow store: {where.tracking_uri})")
        kind = "ssl" if method == "byol" else "supervised"
        print(f"fine-tune it: python jobs/finetune_office.py --{kind} {backbone}")

    return main


def run_job(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> NoReturn:
    """Parse arguments, set up logging and run ``main``; user mistakes exit 2 with a one-line message."""
    args = parser.parse_intermixed_args()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,  # whatever a library's import did to the root logger, the job's log goes to stderr
    )
    tune_allocator()
    try:
        main(args)
    except FewshotError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except OSError as err:  # a path the user chose that cannot be written (checked up front where it can be)
        if err.errno not in UNWRITABLE:
            raise
        print(f"error: cannot write {err.filename}: {err.strerror}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0)


def parse_override_map(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", ...]`` -> ``{"train.lr": 0.001, ...}`` (later overrides win)."""
    return {".".join(keys): value for keys, value in map(parse_override, overrides)}


def _as_overrides(flags: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in flags.items() if value is not None]
