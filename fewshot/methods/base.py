"""What the training loop needs from a method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fewshot.config import OptimConfig
from fewshot.data.transforms import EpisodeTensors


@dataclass
class StepOutput:
    """A training step's named losses (scalar tensors) and the query logits ``(n_query, way)``."""

    losses: dict[str, torch.Tensor]
    logits: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """Parameters updated by one optimiser, and the named losses (summed) they minimise; no names: all.
    ``optim`` gives this objective its own optimiser settings (default: the run's ``train.optim``)."""

    name: str
    params: list[nn.Parameter]
    losses: tuple[str, ...]
    optim: OptimConfig | None = None


class EpisodicMethod(nn.Module):
    """Base of few-shot methods. Subclasses implement :meth:`step` and :meth:`logits`; a method with several
    optimisers (a GAN's generator and critic) overrides :meth:`objectives`; a step may leave out an objective's
    losses (that optimiser then skips the step)."""

    def forward(self, batch: EpisodeTensors) -> StepOutput:
        # Training goes through ``__call__`` so that a DistributedDataParallel wrapper syncs the gradients.
        return self.step(batch)

    def step(self, batch: EpisodeTensors) -> StepOutput:
        """Training forward pass on one episode."""
        raise NotImplementedError

    def logits(self, batch: EpisodeTensors) -> torch.Tensor:
        """Evaluation forward pass: query logits ``(n_query, way)``."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based), e.g. to end a pre-training stage."""

    def objectives(self) -> list[Objective]:
        """By default a single optimiser minimises every loss over every parameter."""
        return [Objective("model", [p for p in self.parameters() if p.requires_grad], ())]
