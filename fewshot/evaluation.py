"""Fixed-episode evaluation: accuracy mean ± 95% CI over episodes, and per-query predictions.

The same numbers as the course's scorer: the mean of per-episode accuracies and ``1.96 * std / sqrt(n)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fewshot.data.cache import ImageBank
from fewshot.data.episodes import Episode
from fewshot.data.predictions import Score, mean_ci95
from fewshot.data.transforms import BatchTransform, episode_tensors
from fewshot.methods.base import EpisodicMethod
from fewshot.methods.protonet import ProtoNet
from fewshot.models.distances import Euclidean


@dataclass(frozen=True)
class Evaluation:
    """``predictions`` ``(n_episodes, n_query)``; ``score`` is None when the episodes carry no answers."""

    predictions: np.ndarray
    score: Score | None


@torch.inference_mode()
def evaluate(
    method: EpisodicMethod,
    bank: ImageBank,
    episodes: Sequence[Episode],
    device: torch.device | str = "cpu",
    transform: BatchTransform = BatchTransform(),
) -> Evaluation:
    """Predict every query of ``episodes`` with ``method`` in eval mode; score them if labels are known."""
    was_training = method.training
    method.eval()
    predictions, correct = [], []
    try:
        for episode in episodes:
            batch = episode_tensors(episode, bank, transform, device)
            predicted = method.logits(batch).argmax(dim=1).cpu()
            predictions.append(predicted.numpy())
            correct.append((predicted == episode.query_labels).double().mean().item())
    finally:
        method.train(was_training)
    known = all(bool((e.query_labels >= 0).all()) for e in episodes)
    return Evaluation(np.stack(predictions), mean_ci95(correct) if known else None)


def mean_colour_baseline(bank: ImageBank, episodes: Sequence[Episode]) -> Score | None:
    """Nearest-mean-colour classifier on ``episodes``: a ProtoNet whose "features" are each image's mean RGB.

    The floor a learned encoder must clear: what the episodes give away through colour alone.
    """
    colour = ProtoNet(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), Euclidean())
    return evaluate(colour, bank, episodes).score
