"""The pre-training recipe: a ResNet backbone trained on the few-shot train split, with BYOL (no labels) or
supervised.

Both kinds are validated alike, without labels in the loss: each epoch the backbone embeds fixed few-shot
selection episodes of unseen classes and queries take the nearest prototype (cosine) — how well the features
transfer, the quantity pre-training is for. The final score uses the report episodes, as for a few-shot run
(:func:`~fewshot.data.splits.load_fewshot_data`), and its per-episode predictions are written in the course
format. Beside them, ``backbone.pt``: the best checkpoint's backbone as
a torchvision ResNet state dict (no ``fc``), which fine-tuning loads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from fewshot.checkpoint import save_checkpoint
from fewshot.config.schema import PretrainConfig
from fewshot.data.predictions import SCORES_FILE, write_predictions, write_scores
from fewshot.data.splits import BankLoader, load_fewshot_data
from fewshot.evaluation import evaluate, linear_probe
from fewshot.methods.base import TrainedModule
from fewshot.methods.byol import BYOL
from fewshot.methods.classifier import Classifier
from fewshot.methods.protonet import ProtoNet
from fewshot.models.distances import Cosine
from fewshot.models.resnet import FEATURES, resnet_backbone
from fewshot.training.loop import Placement, Task
from fewshot.training.recipe import Built, Outcome
from fewshot.training.tasks import BatchPlan, LabelledBatchTask, ViewBatchTask, episode_metrics

log = logging.getLogger(__name__)


def feature_probe(backbone: nn.Module, device: torch.device) -> ProtoNet:
    """A backbone (on ``device``) as a training-free few-shot classifier: nearest prototype by cosine."""
    return ProtoNet(backbone, Cosine(learnable=False).to(device))


def recipe(config: PretrainConfig, load: BankLoader, placement: Placement) -> Built:
    spec = config.eval_episode
    data = load_fewshot_data(config.data, spec, spec, load=load, n_select=config.train.val_episodes)

    def validate(model: TrainedModule, device: torch.device) -> dict[str, float]:
        return episode_metrics(feature_probe(_backbone(model), device), data.select.bank, data.select.episodes, device)

    plan = BatchPlan(config.train, config.seed, placement.world_size, validate)
    model: BYOL | Classifier
    task: Task
    if config.method == "byol":
        byol = config.byol
        model = BYOL(initial_backbone(config), FEATURES[config.arch], byol.hidden, byol.projection, byol.tau_base)
        task = ViewBatchTask(data.train, byol, plan)
    else:
        model = Classifier(initial_backbone(config), FEATURES[config.arch], len(data.train.classes))
        task = LabelledBatchTask(data.train, data.train.labels, plan)

    def finish(run_dir: Path, device: torch.device) -> Outcome:
        backbone = run_dir / "backbone.pt"
        save_checkpoint(backbone, {k: v.cpu() for k, v in model.backbone.state_dict().items()})
        report = data.report
        result = evaluate(feature_probe(model.backbone, device), report.bank, report.episodes, device)
        before = feature_probe(initial_backbone(config).to(device), device)
        untrained = evaluate(before, report.bank, report.episodes, device)
        assert result.score is not None and untrained.score is not None, "report episodes carry their answers"
        # The literature's measure of a self-supervised backbone, on the same split, beside the same floor.
        linear, untrained_linear = (linear_probe(b, report.bank, device) for b in (model.backbone, before.encoder))
        predictions, scores = run_dir / "predictions.csv", run_dir / SCORES_FILE
        write_predictions(predictions, report.testcase.episode_ids, result.predictions)
        write_scores(scores, report.testcase.episode_ids, result.score)
        log.info("the backbone before pre-training, probed on the same episodes: %s", untrained.score)
        baselines, probes = {"random_backbone": untrained.score}, {}
        if linear is not None and untrained_linear is not None:
            log.info("linear probe on held-out images: %s (before pre-training: %s)", linear, untrained_linear)
            baselines["random_backbone_linear"], probes["linear_probe"] = untrained_linear, linear
        return Outcome(
            result.score, predictions, (scores, backbone), baselines, data.protocol, data.inputs, probes=probes
        )

    return Built(model, task, finish)


def initial_backbone(config: PretrainConfig) -> nn.Module:
    """The backbone a pre-training of ``config`` starts from (its seed's random init): the floor its probe
    is read against. The global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return resnet_backbone(config.arch)


def _backbone(model: TrainedModule) -> nn.Module:
    backbone = model.backbone
    assert isinstance(backbone, nn.Module)
    return backbone
