"""What the training loop needs from a model: a step's named losses, its optimisers, and hooks around steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fewshot.config.schema import OptimConfig
from fewshot.data.transforms import EpisodeTensors


@dataclass
class StepOutput:
    """A training step's named losses (scalar tensors), its logits where it classifies (an episode's queries
    ``(n_query, way)``), and metrics to average over the epoch (``acc`` in [0, 1] where it classifies)."""

    losses: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """Parameters updated by one optimiser, and the named losses (summed) they minimise; no names: all.
    ``optim`` gives this objective its own optimiser settings (default: the run's ``train.optim``);
    ``lr_scales``, one per parameter, multiply its learning rate (per-layer rates; default 1)."""

    name: str
    params: list[nn.Parameter]
    losses: tuple[str, ...]
    optim: OptimConfig | None = None
    lr_scales: Sequence[float] = ()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max is the label."""
    return (logits.argmax(1) == labels).float().mean().item()


class TrainedModule(nn.Module):
    """Base of everything the training loop trains. ``forward`` takes a step's inputs and returns a
    :class:`StepOutput`; a model with several optimisers (a GAN's generator and critic) overrides
    :meth:`objectives`; a step may leave out an objective's losses (that optimiser then skips the step)."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based), e.g. to end a pre-training stage."""

    def after_step(self, step: int, total: int) -> None:
        """Called after the optimisers stepped: ``step`` of ``total`` (1-based), e.g. to move an EMA target."""

    def objectives(self) -> list[Objective]:
        """By default a single optimiser minimises every loss over every parameter."""
        return [Objective("model", [p for p in self.parameters() if p.requires_grad], ())]


class EpisodicMethod(TrainedModule):
    """Base of few-shot methods. Subclasses implement :meth:`step` and :meth:`classify`.

    Evaluation is split in two: :meth:`encode` maps each image to its features on its own (in eval mode no
    batch statistics, so an image's features do not depend on the episode it is in), and :meth:`classify`
    scores an episode's queries from its features. Scoring many fixed episodes then embeds each image once.
    """

    encoder: nn.Module

    def forward(self, batch: EpisodeTensors) -> StepOutput:
        # Training goes through ``__call__`` so that a DistributedDataParallel wrapper syncs the gradients.
        output = self.step(batch)
        if output.logits is not None:
            output.metrics.setdefault("acc", accuracy(output.logits, batch.query_labels))
        return output

    def step(self, batch: EpisodeTensors) -> StepOutput:
        """Training forward pass on one episode."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image features ``(N, D)`` that :meth:`classify` takes."""
        return self.encoder(images)

    def classify(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, way: int) -> torch.Tensor:
        """Query logits ``(n_query, way)`` from encoded support (with ``labels`` in ``0..way-1``) and queries."""
        raise NotImplementedError

    def encode_episode(self, batch: EpisodeTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """The episode's support and query features, encoded in one pass (half the kernel launches; in training
        BatchNorm's statistics are the whole episode's)."""
        features = self.encode(torch.cat([batch.support, batch.query]))
        return features[: len(batch.support)], features[len(batch.support) :]

    def logits(self, batch: EpisodeTensors) -> torch.Tensor:
        """Evaluation forward pass: query logits ``(n_query, way)``."""
        support, query = self.encode_episode(batch)
        return self.classify(support, batch.support_labels, query, batch.way)
