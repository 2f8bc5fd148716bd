"""Pre-training a ResNet-50 backbone on the few-shot train split: BYOL without labels, or supervised.

The run folder holds what a few-shot run's does (``config.yaml``, ``last.pt`` / ``best.pt``, resumed from
``last.pt``) plus ``backbone.pt``: the best checkpoint's backbone as a torchvision ResNet-50 state dict (no
``fc``), which fine-tuning loads. Both kinds are validated alike, without labels in the loss: each epoch the
backbone embeds fixed few-shot validation episodes of unseen classes and queries take the nearest prototype
(cosine) — how well the features transfer, the quantity pre-training is for. The final score uses every
fixed episode, and its per-episode predictions are written in the course format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewshot.config import PretrainConfig
from fewshot.data.cache import load_bank
from fewshot.data.episodes import EpisodeSpec
from fewshot.data.predictions import write_predictions
from fewshot.data.splits import BankLoader, load_fewshot_data
from fewshot.evaluation import evaluate
from fewshot.methods.base import TrainedModule
from fewshot.methods.byol import BYOL
from fewshot.methods.classifier import Classifier
from fewshot.methods.protonet import ProtoNet
from fewshot.models.distances import Cosine
from fewshot.models.resnet import FEATURES, resnet50_backbone
from fewshot.training.checkpoint import load_checkpoint, save_checkpoint
from fewshot.training.experiment import ExperimentResult, start_run
from fewshot.training.loop import Placement, Trainer
from fewshot.training.reporting import Reporter
from fewshot.training.tasks import LabelledBatchTask, ViewBatchTask, episode_metrics

log = logging.getLogger(__name__)


def feature_probe(backbone: nn.Module, device: torch.device) -> ProtoNet:
    """A backbone (on ``device``) as a training-free few-shot classifier: nearest prototype by cosine."""
    return ProtoNet(backbone, Cosine(learnable=False).to(device))


def run_pretraining(
    config: PretrainConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
    placement: Placement | None = None,
    resume: dict[str, Any] | None = None,
    load: BankLoader = load_bank,
) -> ExperimentResult:
    """Pre-train as ``config`` says in ``run_dir``; the result's ``files`` hold ``backbone.pt`` (rank 0)."""
    spec = EpisodeSpec(**config.eval_episode.model_dump())
    start = start_run(config, run_dir, placement, resume, load)
    run_dir, placement = start.run_dir, start.placement
    data = load_fewshot_data(config.data, spec, spec, seed=config.seed, load=start.load)
    monitored = data.val_episodes[: config.train.val_episodes]

    def validate(model: TrainedModule, device: torch.device) -> dict[str, float]:
        return episode_metrics(feature_probe(model.backbone, device), data.val, monitored, device)

    args = (config.train, config.seed, placement.world_size, validate)
    model: BYOL | Classifier
    if config.method == "byol":
        byol = config.byol
        model = BYOL(resnet50_backbone(), FEATURES, byol.hidden, byol.projection, byol.tau_base)
        task: ViewBatchTask | LabelledBatchTask = ViewBatchTask(data.train, byol, *args)
    else:
        model = Classifier(resnet50_backbone(), FEATURES, len(data.train.classes))
        task = LabelledBatchTask(data.train, data.train.labels, *args)
    fit = Trainer(config, model, task, run_dir, placement, reporter, start.resume).fit()
    if placement.rank != 0:
        return ExperimentResult(None, fit, None, None)
    model.load_state_dict(load_checkpoint(fit.best_checkpoint, placement.device)["model"])
    backbone = run_dir / "backbone.pt"
    save_checkpoint(backbone, {k: v.cpu() for k, v in model.backbone.state_dict().items()})
    result = evaluate(feature_probe(model.backbone, placement.device), data.val, data.val_episodes, placement.device)
    predictions = run_dir / "predictions.csv"
    write_predictions(predictions, data.testcase.episode_ids, result.predictions)
    log.info("best epoch %d: nearest-prototype %s on %d episodes; backbone -> %s",
             fit.best_epoch, result.score, len(data.val_episodes), backbone)  # fmt: skip
    return ExperimentResult(result.score, fit, predictions, None, files=(backbone,))
