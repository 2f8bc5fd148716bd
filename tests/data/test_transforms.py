"""Batch transforms: exact normalisation, a per-image flip, channels_last output, episodes on the device."""

from __future__ import annotations

import pytest
import torch

from fewshot.config.schema import EpisodeSpec
from fewshot.data.cache import ImageBank
from fewshot.data.episodes import EpisodeSampler
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, episode_tensors


def _images(n: int, size: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_normalisation_values():
    images = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    images[0, 0] = 255
    images[0, 1] = 0
    images[0, 2, 0, 0] = 51  # 0.2
    out = BatchTransform()(images)
    assert out.dtype == torch.float32
    assert out.shape == (1, 3, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.full((2, 2), (1.0 - 0.485) / 0.229))
    torch.testing.assert_close(out[0, 1], torch.full((2, 2), (0.0 - 0.456) / 0.224))
    torch.testing.assert_close(out[0, 2, 0, 0], torch.tensor((0.2 - 0.406) / 0.225))
    torch.testing.assert_close(out[0, 2, 1, 1], torch.tensor((0.0 - 0.406) / 0.225))
    assert (IMAGENET_MEAN, IMAGENET_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_custom_mean_and_std():
    images = torch.full((2, 3, 3, 3), 255, dtype=torch.uint8)
    out = BatchTransform(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))(images)
    assert torch.allclose(out[:, 0], torch.tensor(1.0))
    assert torch.allclose(out[:, 1], torch.tensor(2.0))
    assert torch.allclose(out[:, 2], torch.tensor(0.5))


def test_does_not_modify_input():
    images = _images(4)
    before = images.clone()
    BatchTransform(flip=True)(images, torch.Generator().manual_seed(0))
    assert torch.equal(images, before)


def test_no_flip_by_default():
    images = _images(16)
    plain = BatchTransform()
    assert torch.equal(plain(images, torch.Generator().manual_seed(0)), plain(images))


def test_per_image_flip():
    images = _images(32)
    plain = BatchTransform()(images)
    out = BatchTransform(flip=True)(images, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], plain[i].flip(-1)) for i in range(len(images))]
    kept = [torch.equal(out[i], plain[i]) for i in range(len(images))]
    # Random images are never their own mirror image, so each image is exactly one of the two.
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < len(images)
    # The same generator seed flips the same images; another seed, other images.
    again = BatchTransform(flip=True)(images, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = BatchTransform(flip=True)(images, torch.Generator().manual_seed(2))
    assert not torch.equal(out, other)


def test_output_is_channels_last():
    out = BatchTransform(flip=True)(_images(3, size=5))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.shape == (3, 3, 5, 5)
    assert BatchTransform()(_images(3, size=5)).is_contiguous(memory_format=torch.channels_last)


def _bank(n_classes: int = 4, per_class: int = 5, size: int = 6) -> ImageBank:
    n = n_classes * per_class
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    classes = tuple(f"c{c}" for c in range(n_classes))
    return ImageBank(_images(n, size), labels, classes, tuple(str(i) for i in range(n)))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
        ),
    ],
)
def test_episode_tensors(device):
    bank = _bank()
    spec = EpisodeSpec(way=3, shot=2, query=1)
    episode = EpisodeSampler(bank.labels, bank.classes, spec, seed=0)[4]
    transform = BatchTransform()
    tensors = episode_tensors(episode, bank.to(device), transform, device=device)
    assert tensors.support.shape == (6, 3, 6, 6)
    assert tensors.query.shape == (3, 3, 6, 6)
    assert (tensors.way, tensors.shot) == (3, 2)
    for tensor in (tensors.support, tensors.query, tensors.support_labels, tensors.query_labels):
        assert tensor.device.type == device
    assert tensors.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert tensors.query_labels.tolist() == episode.query_labels.tolist()
    # The pixels are those of the episode's rows, transformed.
    torch.testing.assert_close(tensors.support.cpu(), transform(bank.images[episode.support]))
    torch.testing.assert_close(tensors.query.cpu(), transform(bank.images[episode.query]))
    assert tensors.support.is_contiguous(memory_format=torch.channels_last)


def test_episode_tensors_flip_uses_the_generator():
    bank = _bank(per_class=10, size=8)
    episode = EpisodeSampler(bank.labels, bank.classes, EpisodeSpec(way=4, shot=3, query=4), seed=0)[0]
    transform = BatchTransform(flip=True)
    a = episode_tensors(episode, bank, transform, generator=torch.Generator().manual_seed(5))
    b = episode_tensors(episode, bank, transform, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.support, b.support) and torch.equal(a.query, b.query)
    plain = episode_tensors(episode, bank, BatchTransform())
    both = torch.cat([a.support, a.query])
    reference = torch.cat([plain.support, plain.query])
    flipped = sum(torch.equal(x, r.flip(-1)) for x, r in zip(both, reference, strict=True))
    kept = sum(torch.equal(x, r) for x, r in zip(both, reference, strict=True))
    assert flipped + kept == len(both) and 0 < flipped < len(both)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_episode_tensors_from_cpu_bank_to_cuda():
    bank = _bank()
    episode = EpisodeSampler(bank.labels, bank.classes, EpisodeSpec(way=2, shot=1, query=1), seed=0)[0]
    tensors = episode_tensors(
        episode, bank, BatchTransform(flip=True), device="cuda", generator=torch.Generator().manual_seed(0)
    )
    assert tensors.support.is_cuda and tensors.query_labels.is_cuda
