"""Prototypical Networks (Snell et al., NeurIPS 2017).

Each class is represented by the mean of its embedded support images (its prototype); a query is classified
by a softmax over (negative) distances to the prototypes and trained with cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.transforms import EpisodeTensors
from fewshot.methods.base import EpisodicMethod, StepOutput


def prototypes(features: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """Class means: ``(S, D)`` support features with labels in ``0..way-1`` -> ``(way, D)``."""
    sums = torch.zeros(way, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=way).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]


class ProtoNet(EpisodicMethod):
    """``encoder`` (+ optional ``head``) embeds support and query together; ``distance`` scores query-prototype
    pairs. Stateless: every call takes the whole episode, nothing about the support is kept on the module."""

    def __init__(self, encoder: nn.Module, distance: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head if head is not None else nn.Identity()
        self.distance = distance

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))

    def classify(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, way: int) -> torch.Tensor:
        return self.distance(query, prototypes(support, labels, way))

    def step(self, batch: EpisodeTensors) -> StepOutput:
        logits = self.logits(batch)
        return StepOutput({"ce": F.cross_entropy(logits, batch.query_labels)}, logits)
