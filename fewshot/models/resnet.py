"""ResNet-50 backbones from torchvision, built without downloading anything.

``resnet50_backbone()`` is torchvision's ResNet-50 with random weights and its classifier removed: images ->
2048-d features. ``load_backbone`` fills it from a supervised checkpoint given as a full torchvision state dict
(``fc.*`` entries are ignored), or from a fewshot checkpoint holding one under ``"backbone"``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from fewshot.checkpoint import CheckpointError, read_weights

FEATURES = 2048


def resnet50_backbone() -> nn.Module:
    """torchvision's ResNet-50, random init, ``fc`` replaced by identity: ``(B, 3, H, W) -> (B, 2048)``.

    Each residual block's last BatchNorm starts at zero (``zero_init_residual``), so the untrained network is
    close to a shallow one: trained from scratch on the built-in data at 64 px, it learns within an epoch or two
    where the default start did not move off chance in four (Adam, 1e-3).
    """
    model = resnet50(weights=None, zero_init_residual=True)
    model.fc = nn.Identity()
    return model


def load_backbone(backbone: nn.Module, path: Path) -> None:
    """Load weights into ``backbone`` from a torchvision state dict or a fewshot checkpoint; a file whose keys
    do not fit a ResNet-50 is a :class:`~fewshot.checkpoint.CheckpointError` naming it."""
    state = read_weights(path)
    state = state.get("backbone", state)
    weights = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} is not a ResNet-50 state dict: {len(missing)} weights missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
