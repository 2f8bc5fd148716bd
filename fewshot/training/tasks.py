"""What the training loop trains on (:class:`~fewshot.training.loop.Task`): the inputs of step ``index`` and
the validation metrics.

- :class:`EpisodeTask`: few-shot episodes from a seeded sampler; validation on the fixed selection episodes.
- :class:`LabelledBatchTask`: labelled mini-batches (supervised pre-training, fine-tuning), randomly cropped
  and flipped per image.
- :class:`ViewBatchTask`: unlabelled mini-batches as two augmented views of each image (BYOL).

Mini-batches come from one seeded permutation of the split per epoch, split between ranks by the step's global
index, so every worker sees different images and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

from fewshot.config.schema import BatchTrainConfig, ByolConfig, ExperimentConfig, ViewConfig
from fewshot.data.cache import ImageBank
from fewshot.data.episodes import Episode, EpisodeSampler, episode_seed
from fewshot.data.splits import FewShotData
from fewshot.data.transforms import BatchTransform, LabelledBatch, episode_tensors
from fewshot.data.views import ViewTransform
from fewshot.errors import DataError
from fewshot.evaluation import evaluate
from fewshot.methods.base import EpisodicMethod, TrainedModule

Validation = Callable[[TrainedModule, torch.device], dict[str, float]]


def episode_metrics(
    method: EpisodicMethod, bank: ImageBank, episodes: list[Episode], device: torch.device
) -> dict[str, float]:
    """``val_acc`` and ``val_ci95`` (%) of ``method`` on fixed ``episodes`` that carry their answers."""
    score = evaluate(method, bank, episodes, device).score
    assert score is not None, "validation episodes must carry their answers"
    return {"val_acc": score.mean, "val_ci95": score.ci95}


class EpisodeTask:
    """Few-shot training episodes of ``config.train_episode`` shape; validation on the data's selection episodes
    (never those its score is reported on)."""

    unit = "episodes"

    def __init__(self, config: ExperimentConfig, data: FewShotData) -> None:
        spec = config.train_episode
        self.sampler = EpisodeSampler(data.train.labels, data.train.classes, spec, config.seed)
        self.transform = BatchTransform(flip=config.train.flip)
        self.steps_per_epoch = config.train.episodes_per_epoch
        self.data, self.seed = data, config.seed

    def inputs(self, index: int, device: torch.device) -> object:
        generator = torch.Generator().manual_seed(episode_seed(self.seed + 1, index))
        return episode_tensors(self.sampler[index], self.data.train, self.transform, device, generator)

    def validate(self, model: TrainedModule, device: torch.device) -> dict[str, float]:
        assert isinstance(model, EpisodicMethod)
        return episode_metrics(model, self.data.select.bank, self.data.select.episodes, device)


class BatchOrder:
    """Which rows of an ``n``-image split each worker takes at each step: ``batch_size`` (global) images a step,
    ``world_size`` ranks, one seeded shuffle per epoch; an epoch's last partial batch is dropped."""

    def __init__(self, n: int, batch_size: int, world_size: int, seed: int) -> None:
        self.n, self.world_size, self.seed = n, world_size, seed
        self.per_worker = max(1, batch_size // world_size)
        self.steps_per_epoch = n // (self.per_worker * world_size)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the training split has {n} images, fewer than one batch of {self.per_worker * world_size}; "
                "lower train.batch_size"
            )

    def rows(self, index: int) -> torch.Tensor:
        """Rows for global step ``index`` (``step * world_size + rank``)."""
        step, rank = divmod(index, self.world_size)
        epoch, within = divmod(step, self.steps_per_epoch)
        start = (within * self.world_size + rank) * self.per_worker
        return self._permutation(epoch)[start : start + self.per_worker]

    @lru_cache(maxsize=2)  # noqa: B019 - one order object per run, two epochs' permutations kept
    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(episode_seed(self.seed, epoch)))


def supervised_transform(train: BatchTrainConfig, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random resized crop (when ``train.crop_scale``) and flip per image, then normalisation."""
    if train.crop_scale is None:
        return BatchTransform(flip=train.flip)
    off = {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}
    return ViewTransform(ViewConfig(crop_scale=train.crop_scale, flip_p=0.5 if train.flip else 0.0, **off), size)


@dataclass(frozen=True)
class BatchPlan:
    """How a run's mini-batches are drawn and scored: its ``train`` settings (``batch_size`` is global), seed,
    number of data-parallel workers, and validation."""

    train: BatchTrainConfig
    seed: int
    world_size: int
    validate: Validation


class _BatchTask:
    """Mini-batches of ``bank`` in :class:`BatchOrder`, validated as ``plan`` says."""

    unit = "batches"

    def __init__(self, bank: ImageBank, plan: BatchPlan) -> None:
        self.bank, self.validate = bank, plan.validate
        self.order = BatchOrder(len(bank), plan.train.batch_size, plan.world_size, plan.seed)
        self.steps_per_epoch = self.order.steps_per_epoch

    def _images(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``index``'s rows, and their uint8 images on ``device``."""
        rows = self.order.rows(index)
        return rows, self.bank.images[rows.to(self.bank.images.device)].to(device, non_blocking=True)


class LabelledBatchTask(_BatchTask):
    """Labelled mini-batches (class indices ``targets``), each image randomly cropped and flipped."""

    def __init__(self, bank: ImageBank, targets: torch.Tensor, plan: BatchPlan) -> None:
        super().__init__(bank, plan)
        self.targets = targets
        self.transform = supervised_transform(plan.train, bank.images.shape[-1])

    def inputs(self, index: int, device: torch.device) -> LabelledBatch:
        rows, images = self._images(index, device)
        return LabelledBatch(self.transform(images), self.targets[rows].to(device))


class ViewBatchTask(_BatchTask):
    """Unlabelled mini-batches, each image as BYOL's two augmented views."""

    def __init__(self, bank: ImageBank, byol: ByolConfig, plan: BatchPlan) -> None:
        super().__init__(bank, plan)
        size = bank.images.shape[-1]
        self.views = ViewTransform(byol.view1, size), ViewTransform(byol.view2, size)

    def inputs(self, index: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        _, images = self._images(index, device)
        return self.views[0](images), self.views[1](images)
