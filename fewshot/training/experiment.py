"""One few-shot experiment end to end: data -> model -> training -> final evaluation on every fixed episode.

The run folder holds ``config.yaml``, ``last.pt`` / ``best.pt`` and ``predictions.csv`` (course format). A run
folder that already has ``last.pt`` from the same config is resumed, not restarted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fewshot.atomic import write_text_atomic
from fewshot.config import ExperimentConfig, TrainedConfig, to_yaml
from fewshot.data.cache import load_bank
from fewshot.data.episodes import EpisodeSpec
from fewshot.data.predictions import Score, write_predictions
from fewshot.data.splits import BankLoader, FewShotData, load_fewshot_data, resident_loader
from fewshot.evaluation import evaluate, mean_colour_baseline
from fewshot.methods.base import EpisodicMethod
from fewshot.methods.build import build_method
from fewshot.runtime import select_device, tune_allocator
from fewshot.training.checkpoint import load_checkpoint, resumable
from fewshot.training.loop import FitResult, Placement, Trainer
from fewshot.training.reporting import Reporter
from fewshot.training.tasks import EpisodeTask
from fewshot.viz.tsne import hallucination_tsne

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentResult:
    score: Score | None  # on every fixed validation episode, with the best checkpoint (rank 0 only)
    fit: FitResult
    predictions: Path | None
    colour_baseline: Score | None  # nearest-mean-colour accuracy on the same episodes: the floor to beat
    plots: tuple[Path, ...] = ()  # e.g. the t-SNE of real and hallucinated features
    files: tuple[Path, ...] = ()  # other outputs worth keeping with the run (a pre-trained backbone)


def episode_specs(config: ExperimentConfig) -> tuple[EpisodeSpec, EpisodeSpec]:
    """The training and evaluation episode shapes."""
    return EpisodeSpec(**config.train_episode.model_dump()), EpisodeSpec(**config.eval_episode.model_dump())


@dataclass(frozen=True)
class RunStart:
    """Where a run writes, where it computes, the state it resumes from, and how it loads its splits."""

    run_dir: Path
    placement: Placement
    resume: dict[str, Any] | None
    load: BankLoader


def start_run(
    config: TrainedConfig,
    run_dir: Path,
    placement: Placement | None,
    resume: dict[str, Any] | None,
    load: BankLoader = load_bank,
) -> RunStart:
    """What every kind of run does before its data and model: tune the allocator, place itself (default: this
    process on ``config.train.device``), find the state to resume (default: ``run_dir``'s own ``last.pt`` from
    the same config), write ``config.yaml`` (rank 0), seed the global RNG, and keep the banks ``load`` gives
    on the device as ``config.train.resident`` says."""
    tune_allocator()
    placement = placement or Placement(device=select_device(config.train.device))
    run_dir = Path(run_dir)
    resume = resume if resume is not None else resumable(config, run_dir)
    if placement.rank == 0:
        write_text_atomic(run_dir / "config.yaml", to_yaml(config))
    torch.manual_seed(config.seed)
    return RunStart(run_dir, placement, resume, resident_loader(load, placement.device, config.train.resident))


def run_experiment(
    config: ExperimentConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
    placement: Placement | None = None,
    resume: dict[str, Any] | None = None,
    load: BankLoader = load_bank,
) -> ExperimentResult:
    """Train and evaluate ``config`` in ``run_dir``; ``resume`` overrides the run folder's own ``last.pt``,
    ``load`` how the decoded splits are obtained (default: the on-disk cache)."""
    start = start_run(config, run_dir, placement, resume, load)
    data = load_fewshot_data(config.data, *episode_specs(config), seed=config.seed, load=start.load)
    method = build_method(config)
    task = EpisodeTask(config, data)
    fit = Trainer(config, method, task, start.run_dir, start.placement, reporter, start.resume).fit()
    if start.placement.rank != 0:
        return ExperimentResult(None, fit, None, None)
    return _final_evaluation(method, data, start.run_dir, fit, start.placement)


def _final_evaluation(
    method: EpisodicMethod, data: FewShotData, run_dir: Path, fit: FitResult, placement: Placement
) -> ExperimentResult:
    """Reload the best checkpoint and score it on every fixed episode; write the course predictions CSV."""
    method.load_state_dict(load_checkpoint(fit.best_checkpoint, placement.device)["model"])
    result = evaluate(method, data.val, data.val_episodes, placement.device)
    predictions = run_dir / "predictions.csv"
    write_predictions(predictions, data.testcase.episode_ids, result.predictions)
    baseline = mean_colour_baseline(data.val, data.val_episodes)
    log.info("best epoch %d: %s on %d episodes (mean-colour baseline %s) -> %s",
             fit.best_epoch, result.score, len(data.val_episodes), baseline, predictions)  # fmt: skip
    plots = []
    if hasattr(method, "hallucinate"):
        plots.append(hallucination_tsne(method, data.val, run_dir / "tsne.png", placement.device))
    return ExperimentResult(result.score, fit, predictions, baseline, tuple(plots))
