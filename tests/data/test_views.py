"""BYOL's views (kornia, batched): fresh randomness per image, each augmentation doing what its config says,
on the batch's own device, reproducible from the global seed."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from fewshot.config.schema import ByolConfig, ViewConfig
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fewshot.data.views import ViewTransform

OFF = {"crop_scale": (1.0, 1.0), "flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}


def _images(n: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _unnormalise(views: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return views * std + mean


def test_every_image_of_a_batch_gets_its_own_view() -> None:
    torch.manual_seed(0)
    image = _images(1)[0]
    views = ViewTransform(ByolConfig().view2, 24)(image.expand(8, -1, -1, -1))
    assert views.shape == (8, 3, 24, 24) and views.dtype == torch.float32
    assert views.is_contiguous(memory_format=torch.channels_last)
    assert len({tuple(v.flatten()[:50].tolist()) for v in views}) == 8  # one image, eight different views


def test_with_every_augmentation_off_a_view_is_the_normalised_image() -> None:
    images = _images()
    views = ViewTransform(ViewConfig(**OFF), 32)(images)
    expected = TF.normalize(images.float() / 255, list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(views, expected, atol=1e-5, rtol=0)
    assert len(ViewTransform(ViewConfig(**OFF), 32).augment) == 1  # only the (identity) crop is built


def test_grayscale_and_solarize_at_probability_one() -> None:
    gray = _unnormalise(ViewTransform(ViewConfig(**{**OFF, "grayscale_p": 1.0}), 32)(_images()))
    torch.testing.assert_close(gray[:, 0], gray[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(gray[:, 1], gray[:, 2], atol=1e-5, rtol=0)
    flat = torch.tensor([51, 204], dtype=torch.uint8).repeat_interleave(8).reshape(1, 1, 4, 4).expand(2, 3, 4, 4)
    solarized = _unnormalise(ViewTransform(ViewConfig(**{**OFF, "solarize_p": 1.0}), 4)(flat))
    # 0.2 stays below the 0.5 threshold; 0.8 is above it and inverted to 0.2
    torch.testing.assert_close(solarized, torch.full_like(solarized, 0.2), atol=1e-5, rtol=0)


def test_flip_at_probability_one_mirrors_every_image() -> None:
    images = _images()
    flipped = ViewTransform(ViewConfig(**{**OFF, "flip_p": 1.0}), 32)(images)
    torch.testing.assert_close(flipped, ViewTransform(ViewConfig(**OFF), 32)(images.flip(-1)), atol=1e-5, rtol=0)


def test_crops_and_blur_change_images_and_the_seed_repeats_them() -> None:
    config = ViewConfig(**{**OFF, "crop_scale": (0.2, 0.5), "blur_p": 1.0, "jitter_p": 1.0})
    transform, images = ViewTransform(config, 16), _images()
    torch.manual_seed(3)
    first = transform(images)
    torch.manual_seed(3)
    assert first.shape == (8, 3, 16, 16) and torch.equal(first, transform(images))
    assert not torch.equal(first, transform(images))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_are_drawn_on_the_gpu() -> None:
    views = ViewTransform(ByolConfig().view1, 32)(_images().cuda())
    assert views.is_cuda and views.shape == (8, 3, 32, 32)
