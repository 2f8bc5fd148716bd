"""Episodes: the typed value every few-shot method consumes, and the seeded sampler that draws them.

An episode is N-way K-shot Q-query: ``way * shot`` support images, class-major (all shots of class 0, then
class 1, ...), and ``way * query`` query images. Labels are remapped to ``0..way-1`` in support order, as in
the course's testcase files. Episodes hold row indices into an :class:`~fewshot.data.cache.ImageBank`, not
pixels, so they are cheap to sample, store and send between processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fewshot.config.schema import EpisodeSpec
from fewshot.errors import DataError


@dataclass(frozen=True)
class Episode:
    """One episode as bank rows. ``query_labels`` may be -1 where the answer is unknown (a test set)."""

    spec: EpisodeSpec
    support: torch.Tensor  # (way * shot,) int64 bank rows, class-major
    query: torch.Tensor  # (n_query,) int64 bank rows, any order
    query_labels: torch.Tensor  # (n_query,) int64 in 0..way-1, or -1 for unknown

    def __post_init__(self) -> None:
        spec = self.spec
        if self.support.shape != (spec.way * spec.shot,):
            raise DataError(f"{spec} episode needs {spec.way * spec.shot} support images, got {len(self.support)}")
        if self.query.shape != self.query_labels.shape or self.query.ndim != 1:
            raise DataError("an episode needs one label per query image")
        if ((self.query_labels < -1) | (self.query_labels >= spec.way)).any():
            raise DataError(f"{spec} episode has query labels outside 0..{spec.way - 1}")

    @property
    def support_labels(self) -> torch.Tensor:
        """``(way * shot,)`` labels of the support: ``[0]*shot + [1]*shot + ...``."""
        return torch.arange(self.spec.way).repeat_interleave(self.spec.shot)


class EpisodeSampler:
    """Draws episodes from the classes of a bank, reproducibly: episode ``i`` depends only on ``(seed, i)``.

    That makes a run resumable mid-epoch and lets several workers draw disjoint episodes without talking.
    Sampling is vectorised: one ``randperm`` for the classes, one ``argsort`` of random keys for the images.
    """

    def __init__(self, labels: torch.Tensor, classes: tuple[str, ...], spec: EpisodeSpec, seed: int) -> None:
        counts = torch.bincount(labels, minlength=len(classes))
        if spec.way > len(classes):
            raise DataError(f"{spec} episodes need {spec.way} classes, but the data has only {len(classes)}")
        need = spec.shot + spec.query
        if (counts < need).any():
            short = int(torch.argmax((counts < need).int()))
            raise DataError(
                f"{spec} episodes need {need} images per class, but class {classes[short]!r} "
                f"has only {int(counts[short])}"
            )
        self.spec, self.seed = spec, seed
        # rows[c, j] = bank row of the j-th image of class c; padded slots are never picked (key = 2 > rand).
        order = torch.argsort(labels, stable=True)
        width = int(counts.max())
        slot = torch.arange(width).expand(len(classes), width)
        self._valid = slot < counts[:, None]
        self._rows = torch.zeros(len(classes), width, dtype=torch.long)
        self._rows[self._valid] = order

    def __getitem__(self, index: int) -> Episode:
        spec = self.spec
        generator = torch.Generator().manual_seed(episode_seed(self.seed, index))
        classes = torch.randperm(len(self._rows), generator=generator)[: spec.way]
        keys = torch.rand(self._valid[classes].shape, generator=generator)
        keys[~self._valid[classes]] = 2.0
        picks = keys.argsort(dim=1)[:, : spec.shot + spec.query]
        rows = self._rows[classes].gather(1, picks)
        query_labels = torch.arange(spec.way).repeat_interleave(spec.query)
        return Episode(spec, rows[:, : spec.shot].reshape(-1), rows[:, spec.shot :].reshape(-1), query_labels)


def episode_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for episode ``index`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)
