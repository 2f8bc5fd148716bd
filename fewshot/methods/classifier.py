"""An image classifier: a backbone and a linear layer, trained with cross-entropy on labelled mini-batches.

Used for supervised pre-training and for fine-tuning (Office-Home settings A–E). With ``freeze`` the backbone
is fixed — no gradients, and its BatchNorm layers stay in eval mode so their running statistics do not move
either — and only the classifier learns. ``lr_scale`` gives single layers of a ResNet their own learning
rate (a multiple of the run's), e.g. a smaller one for the stem than for the classifier.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.transforms import LabelledBatch
from fewshot.methods.base import Objective, StepOutput, TrainedModule, accuracy

# torchvision ResNet parameters by layer, for per-layer learning rates: the name prefix of each layer's parameters.
_PREFIXES = {"stem": ("conv1.", "bn1."), **{f"layer{i}": (f"layer{i}.",) for i in range(1, 5)}}


def layer_of(name: str) -> str:
    """The layer (``stem``, ``layer1``..``layer4``) a backbone parameter name belongs to."""
    for layer, prefixes in _PREFIXES.items():
        if name.startswith(prefixes):
            return layer
    raise KeyError(f"{name!r} is not in a ResNet layer")


class Classifier(TrainedModule):
    """``backbone`` (images -> ``features``-d) and a linear layer to ``n_classes``."""

    def __init__(
        self,
        backbone: nn.Module,
        features: int,
        n_classes: int,
        freeze: bool = False,
        lr_scale: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.freeze = backbone, freeze
        self.classifier = nn.Linear(features, n_classes)
        self.lr_scale = dict(lr_scale or {})
        if freeze:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics too
        return self

    def forward(self, batch: LabelledBatch) -> StepOutput:
        logits = self.logits(batch.images)
        loss = F.cross_entropy(logits, batch.labels)
        return StepOutput({"ce": loss}, logits, {"acc": accuracy(logits, batch.labels)})

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze:
            with torch.no_grad():
                features = self.backbone(images)
        else:
            features = self.backbone(images)
        return self.classifier(features)

    def objectives(self) -> list[Objective]:
        named = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        scales = [self.lr_scale.get(self._layer(name), 1.0) for name, _ in named] if self.lr_scale else []
        return [Objective("model", [p for _, p in named], (), lr_scales=scales)]

    @staticmethod
    def _layer(name: str) -> str:
        if name.startswith("classifier."):
            return "classifier"
        return layer_of(name.removeprefix("backbone."))
