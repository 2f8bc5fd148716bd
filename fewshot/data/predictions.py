"""The course's predictions format and its scorer.

A predictions (or ground-truth) CSV has the header ``episode_id,query0,...,query{Q-1}`` and one row per
episode holding each query's predicted class in ``0..way-1``. The score is the mean per-episode accuracy
with a 95% confidence interval, ``1.96 * std / sqrt(n_episodes)`` (population std), both in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fewshot.atomic import atomic_path
from fewshot.data.csvfile import read_text_csv
from fewshot.errors import DataError, one_line


@dataclass(frozen=True)
class Score:
    """Accuracy over episodes: ``mean`` and ``ci95`` in percent, plus the per-episode accuracies (0..1)."""

    mean: float
    ci95: float
    per_episode: np.ndarray

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f} %"


def mean_ci95(per_episode: Sequence[float] | np.ndarray) -> Score:
    """Mean accuracy and its 95% confidence interval, in percent, as the course's scorer computes them."""
    acc = np.asarray(per_episode, dtype=np.float64)
    if acc.size == 0:
        raise DataError("cannot score zero episodes")
    return Score(float(acc.mean() * 100), float(1.96 * acc.std() / np.sqrt(acc.size) * 100), acc)


SCORES_FILE = "scores.csv"  # in a run folder and its MLflow run: each episode's (or image's) accuracy


def write_scores(path: Path, ids: Sequence[str], score: Score) -> None:
    """Write ``id,accuracy`` per scored item (an episode, or an image of a classification), atomically: what
    a paired comparison of two runs scored on the same items needs."""
    if len(ids) != len(score.per_episode):
        raise ValueError(f"{len(ids)} ids for {len(score.per_episode)} scores")
    frame = pd.DataFrame({"id": list(ids), "accuracy": score.per_episode})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_scores(path: Path) -> pd.Series:
    """A ``scores.csv`` as a series of accuracies indexed by item id."""
    frame = pd.read_csv(path, dtype={"id": str})
    if list(frame.columns) != ["id", "accuracy"]:
        raise DataError(f"{path}: expected the columns id,accuracy, found {','.join(map(str, frame.columns))}")
    return frame.set_index("id")["accuracy"]


def paired_difference(scores: pd.Series, reference: pd.Series) -> Score:
    """``scores - reference`` item by item, in points, with the 95% interval of that mean difference; both must
    score the same items (the same episodes), else the difference would compare different tests."""
    if len(scores) != len(reference) or set(scores.index) != set(reference.index):
        raise DataError(
            f"cannot pair {len(scores)} scored items with {len(reference)}: they were not scored on the same episodes"
        )
    return mean_ci95((scores - reference.reindex(scores.index)).to_numpy())


def write_predictions(path: Path, episode_ids: Sequence[str], predictions: np.ndarray) -> None:
    """Write ``(n_episodes, n_query)`` predictions in the course format, atomically."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or len(predictions) != len(episode_ids):
        raise ValueError(f"need one row of predictions per episode, got shape {predictions.shape}")
    frame = pd.DataFrame(predictions, columns=[f"query{i}" for i in range(predictions.shape[1])])
    frame.insert(0, "episode_id", list(episode_ids))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_predictions(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Read a predictions or ground-truth CSV: episode ids and an ``(n_episodes, n_query)`` int array."""
    frame = read_text_csv(path)
    expected = ["episode_id"] + [f"query{i}" for i in range(len(frame.columns) - 1)]
    if list(frame.columns) != expected or len(expected) < 2:
        found = one_line(",".join(frame.columns))
        raise DataError(f"{path}: header must be episode_id,query0,...,queryN; found {found}")
    try:
        values = frame.iloc[:, 1:].astype(np.int64).to_numpy()
    except (ValueError, TypeError, OverflowError):
        valid = frame.iloc[:, 1:].map(_is_class_number).all(axis=1).to_numpy()
        bad = int(np.argmin(valid))
        raise DataError(f"{path}: line {bad + 2} has a prediction that is not a class number") from None
    return tuple(frame["episode_id"]), values


def _is_class_number(text: str) -> bool:
    """Whether a cell converts to an int64, as ``astype(np.int64)`` needs (``"1.5"``, ``""`` do not)."""
    try:
        return -(2**63) <= int(text) < 2**63
    except (TypeError, ValueError):
        return False


def score_predictions(prediction_path: Path, truth_path: Path) -> Score:
    """Score a predictions CSV against a ground-truth CSV with the same episodes and queries."""
    pred_ids, pred = read_predictions(prediction_path)
    true_ids, truth = read_predictions(truth_path)
    if pred.shape[1] != truth.shape[1]:
        raise DataError(f"{prediction_path}: {pred.shape[1]} queries per episode, {truth_path} has {truth.shape[1]}")
    missing = sorted(set(true_ids) - set(pred_ids))
    if missing:
        raise DataError(f"{prediction_path}: no prediction for episode {missing[0]} ({len(missing)} missing)")
    row_of = {episode_id: row for row, episode_id in enumerate(pred_ids)}
    aligned = pred[[row_of[e] for e in true_ids]]
    return mean_ci95((aligned == truth).mean(axis=1))
