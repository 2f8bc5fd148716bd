"""One training run, whatever its kind — the skeleton every run follows:

    start (place, find the state to resume, seed) -> the recipe reads the data, builds model and task ->
    write config.yaml -> Trainer.fit -> rank 0: reload the best checkpoint -> the recipe scores it and writes

What differs between kinds of run is a :class:`~fewshot.training.recipe.Recipe`, chosen by the config's type:
few-shot episodes (:mod:`~fewshot.training.episodic`), backbone pre-training (:mod:`~fewshot.training.pretrain`)
and fine-tuning (:mod:`~fewshot.training.finetune`). A run folder holds ``config.yaml``, ``last.pt`` /
``best.pt`` and ``predictions.csv``; one that already has a ``last.pt`` of the same config is resumed.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from fewshot.atomic import owned, write_text_atomic
from fewshot.checkpoint import load_checkpoint
from fewshot.config.loading import config_dict, flatten, to_yaml
from fewshot.config.schema import ExperimentConfig, FinetuneConfig, PretrainConfig, TrainedConfig
from fewshot.data.cache import load_bank
from fewshot.data.splits import BankLoader, resident_loader
from fewshot.errors import ConfigError
from fewshot.runtime import select_device, tune_allocator
from fewshot.training import episodic, finetune, pretrain
from fewshot.training.loop import Placement, Trainer
from fewshot.training.recipe import Recipe, RunResult
from fewshot.training.reporting import Reporter

log = logging.getLogger(__name__)

RECIPES: dict[type[TrainedConfig], Recipe[Any]] = {
    ExperimentConfig: episodic.recipe,
    PretrainConfig: pretrain.recipe,
    FinetuneConfig: finetune.recipe,
}


def run(
    config: TrainedConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
    placement: Placement | None = None,
    resume: dict[str, Any] | None = None,
    load: BankLoader = load_bank,
    restart: bool = False,
) -> RunResult:
    """Train ``config`` in ``run_dir`` and score its best checkpoint.

    ``placement`` says where this copy runs (default: this process, on ``config.train.device``), ``resume`` is
    the state to continue from (default: ``run_dir``'s own ``last.pt``; ``restart``: none, the folder's
    checkpoints are replaced), ``load`` how the decoded splits are obtained (default: the on-disk cache; a
    cluster shares them through its object store). Rank 0 owns ``run_dir`` while it runs
    (:func:`~fewshot.atomic.owned`): a second run into the same folder is an error, never a mix of two runs.
    """
    tune_allocator()
    placement = placement or Placement(device=select_device(config.train.device))
    run_dir = Path(run_dir)
    torch.manual_seed(config.seed)
    load = resident_loader(load, placement.device, config.train.resident)
    built = RECIPES[type(config)](config, load, placement)  # reads and checks the data before anything is written
    with owned(run_dir) if placement.rank == 0 else nullcontext():
        if restart:
            for name in ("last.pt", "best.pt"):
                (run_dir / name).unlink(missing_ok=True)
        resume = resume if resume is not None else resumable(config, run_dir)
        if placement.rank == 0:
            write_text_atomic(run_dir / "config.yaml", to_yaml(config))
        fit = Trainer(config, built.model, built.task, run_dir, placement, reporter, resume).fit()
        if placement.rank != 0:
            return RunResult(fit)
        built.model.load_state_dict(load_checkpoint(fit.best_checkpoint, placement.device)["model"])
        outcome = built.finish(run_dir, placement.device)
    log.info("best epoch %d: %s -> %s", fit.best_epoch, outcome.score, outcome.predictions)
    return RunResult(fit, outcome)


def resumable(config: TrainedConfig, run_dir: Path) -> dict[str, Any] | None:
    """``run_dir``'s ``last.pt`` if it was written by a run of ``config`` (to resume), None if there is none; a
    run of another config there is a :class:`ConfigError` naming the keys that differ (it would be overwritten)."""
    last = Path(run_dir) / "last.pt"
    if not last.is_file():
        return None
    state = load_checkpoint(last)
    if state["config"] != config_dict(config):
        raise ConfigError(
            f"{run_dir} holds a run of another config ({config_difference(state['config'], config_dict(config))}); "
            "resume it with its own config, choose another output_dir, or pass --restart to replace it"
        )
    return state


def config_difference(old: dict[str, Any], new: dict[str, Any], shown: int = 4) -> str:
    """The keys whose values differ between two config dicts, as ``key: old -> new`` (the first ``shown``)."""
    before, after = flatten(old), flatten(new)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    parts = [f"{k}: {before.get(k, '(unset)')!r} -> {after.get(k, '(unset)')!r}" for k in keys[:shown]]
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{len(keys)} key(s) differ: {', '.join(parts)}{more}"
