"""The Conv4 encoder of Prototypical Networks (Snell et al. 2017), as the course defines it.

Four blocks of Conv3x3(64, padding 1) -> BatchNorm -> ReLU -> MaxPool2; an 84x84 image becomes
64 x 5 x 5 = 1600 features.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3 -> BatchNorm -> ReLU -> MaxPool2: halves the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """``(B, 3, H, W)`` images -> ``(B, hidden * (H // 16) * (W // 16))`` features."""

    def __init__(self, hidden: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.blocks = nn.Sequential(*(conv_block(in_channels if i == 0 else hidden, hidden) for i in range(4)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(images).flatten(1)

    def out_dim(self, image_size: int) -> int:
        """Feature size for square ``image_size`` inputs (1600 at 84)."""
        side = image_size
        for _ in range(4):
            side //= 2
        return self.hidden * side * side
