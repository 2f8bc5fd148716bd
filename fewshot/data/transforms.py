"""Batch transforms applied on the compute device, after indexing the uint8 bank.

Augmenting a whole episode at once costs ~1 ms on a CPU; per-image PIL transforms cost tens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

from fewshot.data.cache import ImageBank
from fewshot.data.episodes import Episode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BatchTransform:
    """uint8 ``(B, 3, H, W)`` -> normalised float, with an optional per-image random horizontal flip.

    torchvision's ``RandomHorizontalFlip`` flips a whole batch or none of it; here each image decides.
    The output is channels_last, which convolutions on CPU and GPU run faster in.
    """

    flip: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = TF.to_dtype(images, torch.float32, scale=True)
        if self.flip:
            flips = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
        x = TF.normalize(x, list(self.mean), list(self.std))
        return x.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class EpisodeTensors:
    """An episode's images and labels on the compute device, ready for a method's forward pass."""

    support: torch.Tensor  # (way * shot, 3, H, W) float
    support_labels: torch.Tensor  # (way * shot,)
    query: torch.Tensor  # (n_query, 3, H, W) float
    query_labels: torch.Tensor  # (n_query,), -1 where unknown
    way: int
    shot: int


@dataclass(frozen=True)
class LabelledBatch:
    """A mini-batch's normalised images ``(B, 3, H, W)`` and class indices ``(B,)``, on the compute device."""

    images: torch.Tensor
    labels: torch.Tensor


def episode_tensors(
    episode: Episode,
    bank: ImageBank,
    transform: BatchTransform,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> EpisodeTensors:
    """Gather an episode's images from ``bank`` and transform them on ``device`` in one batch."""
    rows = torch.cat([episode.support, episode.query]).to(bank.images.device)
    images = transform(bank.images[rows].to(device, non_blocking=True), generator)
    n_support = len(episode.support)
    return EpisodeTensors(
        support=images[:n_support],
        support_labels=episode.support_labels.to(device),
        query=images[n_support:],
        query_labels=episode.query_labels.to(device),
        way=episode.spec.way,
        shot=episode.spec.shot,
    )
