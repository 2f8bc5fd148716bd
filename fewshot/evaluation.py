"""Fixed-episode evaluation: accuracy mean ± 95% CI over episodes, and per-query predictions.

The same numbers as the course's scorer: the mean of per-episode accuracies and ``1.96 * std / sqrt(n)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fewshot.data.cache import ImageBank
from fewshot.data.episodes import Episode
from fewshot.data.predictions import Score, mean_ci95
from fewshot.data.transforms import BatchTransform
from fewshot.methods.base import EpisodicMethod
from fewshot.methods.protonet import ProtoNet
from fewshot.models.distances import Euclidean


@dataclass(frozen=True)
class Evaluation:
    """``predictions`` ``(n_episodes, n_query)``; ``score`` is None when the episodes carry no answers."""

    predictions: np.ndarray
    score: Score | None


# Images per encoding pass when scoring fixed episodes: enough to keep a CPU's cores busy, few enough that a
# Conv4's first activations (~1.8 MB per 84 px image) stay within a few hundred MB.
ENCODE_BATCH = 128


@torch.inference_mode()
def evaluate(
    method: EpisodicMethod,
    bank: ImageBank,
    episodes: Sequence[Episode],
    device: torch.device | str = "cpu",
    transform: BatchTransform = BatchTransform(),
) -> Evaluation:
    """Predict every query of ``episodes`` with ``method`` in eval mode; score them if labels are known.

    Each image the episodes use is encoded once, however many episodes hold it (600 5-way 1-shot episodes of
    a 20-class split fill 48,000 image slots with at most 1,200 images); each episode is then classified from
    its features. In eval mode an image's features do not depend on its episode, so the predictions are those
    of :meth:`~fewshot.methods.base.EpisodicMethod.logits` episode by episode.
    """
    if not episodes:
        raise ValueError("no episodes to evaluate")
    was_training = method.training
    method.eval()
    predictions, correct = [], []
    try:
        rows, features = _encode_used(method, bank, episodes, device, transform)
        for episode in episodes:
            support, query = (
                features[torch.searchsorted(rows, r).to(features.device)] for r in (episode.support, episode.query)
            )
            labels = episode.support_labels.to(features.device)
            predicted = method.classify(support, labels, query, episode.spec.way).argmax(dim=1).cpu()
            predictions.append(predicted.numpy())
            correct.append((predicted == episode.query_labels).double().mean().item())
    finally:
        method.train(was_training)
    known = all(bool((e.query_labels >= 0).all()) for e in episodes)
    return Evaluation(np.stack(predictions), mean_ci95(correct) if known else None)


def _encode_used(
    method: EpisodicMethod,
    bank: ImageBank,
    episodes: Sequence[Episode],
    device: torch.device | str,
    transform: BatchTransform,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted bank rows that ``episodes`` use, and their features (one row each), encoded in batches."""
    rows = torch.unique(torch.cat([r for e in episodes for r in (e.support, e.query)]))
    return rows, encode_rows(method.encode, bank, rows, device, transform)


def encode_rows(
    encode: Callable[[torch.Tensor], torch.Tensor],
    bank: ImageBank,
    rows: torch.Tensor,
    device: torch.device | str,
    transform: BatchTransform,
) -> torch.Tensor:
    """``encode`` of the bank images ``rows`` (one feature row each), ``ENCODE_BATCH`` images at a time."""
    features = [
        encode(transform(bank.images[chunk.to(bank.images.device)].to(device, non_blocking=True)))
        for chunk in rows.split(ENCODE_BATCH)
    ]
    return torch.cat(features)


def mean_colour_baseline(bank: ImageBank, episodes: Sequence[Episode]) -> Score | None:
    """Nearest-mean-colour classifier on ``episodes``: a ProtoNet whose "features" are each image's mean RGB.

    The floor a learned encoder must clear: what the episodes give away through colour alone.
    """
    colour = ProtoNet(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), Euclidean())
    return evaluate(colour, bank, episodes).score


@torch.inference_mode()
def linear_probe(
    encoder: nn.Module,
    bank: ImageBank,
    device: torch.device | str = "cpu",
    transform: BatchTransform = BatchTransform(),
) -> Score | None:
    """Linear evaluation, self-supervised learning's own protocol (BYOL, Grill et al. 2020, §4.1), on the classes
    of ``bank``: a logistic regression on the frozen encoder's standardised features, fit on every other image of
    each class and scored on the rest, one accuracy per scored image. Its regularisation is fixed, so nothing is
    selected and no image is both fit and scored. None when a class has fewer than two images.

    Where a nearest-prototype probe weighs every feature alike, this one learns which features carry the classes:
    it sees class information that features of mostly other factors (pose, colour) would hide from a prototype.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labels = bank.labels.numpy()
    position = np.zeros(len(labels), dtype=np.int64)  # each image's index within its class
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        position[rows] = np.arange(len(rows))
    fit = position % 2 == 0
    if len(np.unique(labels)) < 2 or len(np.unique(labels[~fit])) < len(np.unique(labels)):
        return None
    encoder.eval()
    features = encode_rows(encoder, bank, torch.arange(len(bank)), device, transform).float().cpu().numpy()
    scaler = StandardScaler().fit(features[fit])
    with warnings.catch_warnings():  # an untrained encoder's features may not separate: the score says so
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=1000).fit(scaler.transform(features[fit]), labels[fit])
    correct = model.predict(scaler.transform(features[~fit])) == labels[~fit]
    return mean_ci95(correct.astype(np.float64))
