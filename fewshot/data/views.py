"""BYOL's augmented views, drawn for a whole batch at once on the batch's device with fresh randomness per image.

torchvision's v2 transforms draw one set of random parameters per call, so a batch would share one crop and
one colour change; kornia's augmentations draw parameters per image and apply them as batched tensor
operations: the same augmentations (random resized crop, flip, colour jitter, grayscale, Gaussian blur,
solarize) in one pass over the batch, on the GPU when the batch is there. An augmentation whose probability
is 0 is left out of the pipeline, so a supervised crop-and-flip costs only those two.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from fewshot.config.schema import ViewConfig
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class ViewTransform:
    """uint8 ``(B, 3, H, W)`` -> normalised float ``(B, 3, size, size)``, a random view of every image."""

    def __init__(self, config: ViewConfig, size: int) -> None:
        kernel = max(3, (size // 10) | 1)  # odd, ~10% of the image as in the paper (23 px at 224)
        steps: list[tuple[float, nn.Module]] = [
            (1.0, K.RandomResizedCrop((size, size), scale=config.crop_scale, p=1.0)),
            (config.flip_p, K.RandomHorizontalFlip(p=config.flip_p)),
            (config.jitter_p, K.ColorJitter(*config.jitter, p=config.jitter_p)),
            (config.grayscale_p, K.RandomGrayscale(p=config.grayscale_p)),
            (config.blur_p, K.RandomGaussianBlur((kernel, kernel), config.blur_sigma, p=config.blur_p)),
            # threshold 0.5 (torchvision's 128 of 255), nothing added
            (config.solarize_p, K.RandomSolarize(thresholds=0.0, additions=0.0, p=config.solarize_p)),
        ]
        self.augment = nn.Sequential(*(step for p, step in steps if p > 0))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        views = self.augment(TF.to_dtype(images, torch.float32, scale=True))
        views = TF.normalize(views, list(IMAGENET_MEAN), list(IMAGENET_STD))
        return views.contiguous(memory_format=torch.channels_last)
