"""The fine-tuning recipe: a ResNet-50 on Office-Home (``office/{train,val}.csv``, string labels shared by both
splits).

The backbone starts from random weights or a pre-trained checkpoint and is trained with a linear classifier
(``freeze``: the classifier alone). Validation accuracy is the share of validation images classified right,
with a 95% normal-approximation interval. Office-Home has no split apart from the one reported on, so the last
epoch's model is kept (``train.select: last``) and scored; its predictions are written in Office-Home's format,
``id,filename,label`` with the predicted class name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from fewshot.atomic import atomic_path
from fewshot.config.schema import FinetuneConfig
from fewshot.data.cache import ImageBank
from fewshot.data.predictions import SCORES_FILE, Score, mean_ci95, write_scores
from fewshot.data.splits import BankLoader, Protocol, data_root
from fewshot.data.tables import OFFICE_DIRS, ImageTable, open_split
from fewshot.data.transforms import BatchTransform
from fewshot.errors import DataError
from fewshot.methods.base import TrainedModule
from fewshot.methods.classifier import Classifier
from fewshot.models.resnet import FEATURES, load_backbone, resnet_backbone
from fewshot.training.loop import Placement
from fewshot.training.recipe import Built, Outcome
from fewshot.training.tasks import BatchPlan, LabelledBatchTask

log = logging.getLogger(__name__)


def class_targets(table: ImageTable, classes: tuple[str, ...]) -> torch.Tensor:
    """Indices into ``classes`` (the training split's) of ``table``'s labels; an unknown label is a DataError."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = [label for label in table.classes if label not in index]
    if unknown:
        raise DataError(
            f"{table.source}: label {unknown[0]!r} is not a class of the training split "
            f"({len(unknown)} unknown label(s); both splits must share the classes)"
        )
    return torch.tensor([index[label] for label in table.labels], dtype=torch.long)


@torch.inference_mode()
def classify(model: Classifier, bank: ImageBank, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Predicted class index of every image of ``bank``, in eval mode."""
    was_training = model.training
    model.eval()
    transform, predictions = BatchTransform(), []
    try:
        for start in range(0, len(bank), batch_size):
            images = bank.images[start : start + batch_size].to(device, non_blocking=True)
            predictions.append(model.logits(transform(images)).argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(predictions)


def classification_score(predicted: torch.Tensor, targets: torch.Tensor) -> Score:
    """Accuracy (%) of ``predicted`` class indices with its 95% interval (``1.96 * std / sqrt(n)`` of right/wrong)."""
    return mean_ci95((predicted == targets).double().numpy())


def write_office_predictions(path: Path, table: ImageTable, predicted: torch.Tensor, classes: tuple[str, ...]) -> None:
    """Office-Home's predictions CSV, ``id,filename,label``, atomically."""
    names, labels = [p.name for p in table.paths], [classes[i] for i in predicted.tolist()]
    frame = pd.DataFrame({"id": table.ids, "filename": names, "label": labels})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def recipe(config: FinetuneConfig, load: BankLoader, placement: Placement) -> Built:
    root, data = data_root(config.data), config.data
    train_table = open_split(root, data.train_split, OFFICE_DIRS)
    val_table = open_split(root, data.val_split, OFFICE_DIRS)
    train = load(train_table, data.image_size, data.resize, data.cache_dir)
    val = load(val_table, data.image_size, data.resize, data.cache_dir)
    val_targets = class_targets(val_table, train.classes)
    log.info("data: %d train images, %d classes; %d val images (%s)", len(train), len(train.classes), len(val), root)
    backbone = resnet_backbone(config.arch)
    if config.backbone is not None:
        load_backbone(backbone, Path(config.backbone).expanduser(), config.arch)
    model = Classifier(backbone, FEATURES[config.arch], len(train.classes), config.freeze, config.lr_scale)
    reported = f"{len(val)} {data.val_split} images ({val_table.source.name})"
    if config.train.select == "last":
        protocol = Protocol("last-epoch", "the last epoch", reported)
    else:  # the user's choice, named for what it is
        protocol = Protocol("best-on-report", f"the best epoch on the same {len(val)} images", reported)

    def validate(model: TrainedModule, device: torch.device) -> dict[str, float]:
        assert isinstance(model, Classifier)
        score = classification_score(classify(model, val, device), val_targets)
        return {"val_acc": score.mean, "val_ci95": score.ci95}

    def finish(run_dir: Path, device: torch.device) -> Outcome:
        predicted = classify(model, val, device)
        predictions, scores = run_dir / "predictions.csv", run_dir / SCORES_FILE
        write_office_predictions(predictions, val_table, predicted, train.classes)
        score = classification_score(predicted, val_targets)
        write_scores(scores, val_table.ids, score)
        return Outcome(score, predictions, (scores,), protocol=protocol, inputs=(("train", train), ("report", val)))

    task = LabelledBatchTask(train, train.labels, BatchPlan(config.train, config.seed, placement.world_size, validate))
    return Built(model, task, finish)
