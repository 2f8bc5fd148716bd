"""BYOL (Grill et al., NeurIPS 2020): self-supervised learning without negatives.

An online network (backbone -> projector -> predictor) learns to predict, for one augmented view of an image,
the projection a target network makes of another view. The target is not trained: it is an exponential
moving average of the online backbone and projector, its rate ``tau`` rising from ``tau_base`` to 1 on a
cosine schedule over training. The loss is symmetric in the two views: ``2 - 2 cos(p, z')`` both ways.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.methods.base import StepOutput, TrainedModule
from fewshot.precision import full_precision


class MLP(nn.Sequential):
    """BYOL's projector and predictor: Linear -> BatchNorm -> ReLU -> Linear."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


@full_precision
def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean(2 - 2 cos(p, z))`` over the batch; no gradient flows into ``target``."""
    return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=1)).mean()


def target_tau(step: int, total: int, base: float) -> float:
    """The target's EMA rate at ``step`` of ``total``: ``1 - (1 - base) (cos(pi step / total) + 1) / 2``,
    ``base`` at the start and 1 at the end."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


class BYOL(TrainedModule):
    """Online backbone, projector and predictor, and the EMA target of backbone and projector; after every
    optimiser step the target moves towards the online net at the scheduled rate."""

    def __init__(
        self, backbone: nn.Module, features: int, hidden: int = 4096, projection: int = 256, tau_base: float = 0.996
    ) -> None:
        super().__init__()
        self.tau_base = tau_base
        self.backbone = backbone
        self.projector = MLP(features, hidden, projection)
        self.predictor = MLP(projection, hidden, projection)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def forward(self, views: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        return StepOutput({"byol": self.loss(*views)})

    def after_step(self, step: int, total: int) -> None:
        self.update_target(target_tau(step, total, self.tau_base))

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The symmetric loss of two views of the same images (both views go through each network at once)."""
        both = torch.cat([view1, view2])
        predictions = self.predictor(self.projector(self.backbone(both)))
        with torch.no_grad():
            targets = self.target_projector(self.target_backbone(both))
        p1, p2 = predictions.chunk(2)
        z1, z2 = targets.chunk(2)
        return regression_loss(p1, z2) + regression_loss(p2, z1)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """``target = tau * target + (1 - tau) * online`` for weights; buffers (BatchNorm statistics) copied."""
        for online, target in ((self.backbone, self.target_backbone), (self.projector, self.target_projector)):
            for online_param, target_param in zip(online.parameters(), target.parameters(), strict=True):
                target_param.lerp_(online_param, 1 - tau)
            for online_buffer, target_buffer in zip(online.buffers(), target.buffers(), strict=True):
                target_buffer.copy_(online_buffer)
