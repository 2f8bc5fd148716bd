"""BYOL's augmented views with torchvision v2 transforms, applied to a batch with fresh randomness per image.

A v2 transform given a batched tensor draws one set of random parameters for the whole batch; a view of
BYOL needs its own crop, flip, jitter... for every image, so :class:`ViewTransform` applies the composed
transform image by image on the batch's device and stacks the results.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from fewshot.config import ViewConfig
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class ViewTransform:
    """uint8 ``(B, 3, H, W)`` -> normalised float ``(B, 3, size, size)``, a random view of every image."""

    def __init__(self, config: ViewConfig, size: int) -> None:
        kernel = max(3, (size // 10) | 1)  # odd, ~10% of the image as in the paper (23 px at 224)
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=config.crop_scale, antialias=True),
            v2.RandomHorizontalFlip(config.flip_p),
            v2.RandomApply([v2.ColorJitter(*config.jitter)], p=config.jitter_p),
            v2.RandomGrayscale(config.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=config.blur_sigma)], p=config.blur_p),
            v2.RandomSolarize(threshold=128, p=config.solarize_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ])  # fmt: skip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        views = torch.stack([self.transform(image) for image in images])
        return views.contiguous(memory_format=torch.channels_last)
