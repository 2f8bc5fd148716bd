"""What every job entry point shares: ``--config`` plus ``key=value`` overrides, logging, and user errors
reported as one line (``error: ...``, exit status 2) instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from fewshot.config.loading import parse_override
from fewshot.errors import FewshotError
from fewshot.runtime import tune_allocator

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--config FILE`` and trailing ``key.sub=value`` overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", metavar="FILE", help="YAML config; overrides below are applied after it")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=1e-3")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def run_job(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> NoReturn:
    """Parse arguments, set up logging and run ``main``; user mistakes exit 2 with a one-line message."""
    args = parser.parse_intermixed_args()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    tune_allocator()
    try:
        main(args)
    except FewshotError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0)


def sweep_parser(description: str) -> argparse.ArgumentParser:
    """:func:`job_parser` plus the flags every sweep shares; each flag is a shortcut for a config override."""
    parser = job_parser(description)
    parser.add_argument("--data-root", help="dataset root (default: the built-in dataset)")
    parser.add_argument("--epochs", type=int, help="training epochs per run")
    parser.add_argument("--episodes", type=int, help="training episodes per epoch")
    parser.add_argument("--train-way", type=int, help="classes per training episode")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (table: mean ± std)")
    add_run_flags(parser)
    return parser


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--tracking-uri`` and ``--results``: how many Ray Train workers, where runs are kept."""
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per run (data parallel)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                        "sqlite:///<results>/mlflow.db)")  # fmt: skip
    parser.add_argument("--results", help="folder for run outputs and the local MLflow store (default: "
                        "$FEWSHOT_RESULTS or ./results)")  # fmt: skip


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The sweep flags as ``key=value`` overrides, applied before the explicit ones."""
    flags = {"data.root": args.data_root, "train.epochs": args.epochs,
             "train.episodes_per_epoch": args.episodes, "train_episode.way": args.train_way}  # fmt: skip
    return [f"{key}={value}" for key, value in flags.items() if value is not None]


def parse_override_map(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", ...]`` -> ``{"train.lr": 0.001, ...}`` (later overrides win)."""
    return {".".join(keys): value for keys, value in map(parse_override, overrides)}
