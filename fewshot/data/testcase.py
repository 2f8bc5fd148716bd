"""Fixed evaluation episodes in the course's testcase format.

A testcase CSV has one row per episode: ``episode_id``, then the image ids of the ``way * shot`` support
images class-major, then the ids of the query images. Columns are read by position, never by name, as the
course's files name them differently across years. Support label ``i`` is the ``i``-th class in support order;
the answers live in a separate ground-truth CSV in the predictions format (``<name>_gt.csv`` by convention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fewshot.atomic import atomic_path
from fewshot.config.schema import EpisodeSpec
from fewshot.data.cache import ImageBank
from fewshot.data.csvfile import read_text_csv
from fewshot.data.episodes import Episode, EpisodeSampler
from fewshot.data.predictions import read_predictions, write_predictions
from fewshot.data.tables import ImageTable
from fewshot.errors import DataError


@dataclass(frozen=True)
class Testcase:
    """Episodes as image ids: ``support_ids`` ``(E, way * shot)`` and ``query_ids`` ``(E, n_query)``."""

    spec: EpisodeSpec
    episode_ids: tuple[str, ...]
    support_ids: np.ndarray
    query_ids: np.ndarray


def read_testcase(path: Path, way: int, shot: int) -> Testcase:
    """Read a testcase CSV whose episodes are ``way``-way ``shot``-shot (the query count is inferred)."""
    frame = read_text_csv(path)
    n_support = way * shot
    n_query = frame.shape[1] - 1 - n_support
    if n_query < way or n_query % way:
        raise DataError(
            f"{path}: {frame.shape[1] - 1} image ids per episode do not make {way}-way {shot}-shot episodes "
            f"(need {n_support} support ids plus a multiple of {way} query ids)"
        )
    ids = frame.to_numpy()
    blank = np.argwhere(ids == "")
    if len(blank):
        raise DataError(f"{path}: line {blank[0][0] + 2}, column {blank[0][1] + 1} is empty")
    spec = EpisodeSpec(way=way, shot=shot, query=n_query // way)
    return Testcase(spec, tuple(ids[:, 0]), ids[:, 1 : 1 + n_support], ids[:, 1 + n_support :])


def episode_shape(path: Path, way: int) -> tuple[int, int]:
    """The way and shot of a testcase file's episodes, from its header: the course's and fewshot's name the
    queries ``query<i>``, which tells the support columns apart; the way is the number of classes that
    ``class<c>_support<k>`` names count, else ``way``. The testcase decides the shape of a prediction, not the
    model that predicts it; a header that names no query columns is an error asking for ``--way``/``--shot``."""
    names = [str(name) for name in read_text_csv(path).columns[1:]]
    n_query = sum(name.startswith("query") for name in names)
    n_support = len(names) - n_query
    if n_query == 0 or not all(name.startswith("query") for name in names[n_support:]):
        raise DataError(
            f"{path}: the header does not name its query columns query0, query1, ...; pass --way and --shot"
        )
    classes = {name.split("_")[0] for name in names[:n_support] if re.fullmatch(r"class\d+_support\d+", name)}
    way = len(classes) or way
    if n_support == 0 or n_support % way or n_query % way:
        raise DataError(
            f"{path}: {n_support} support and {n_query} query ids per episode do not make {way}-way episodes; "
            "pass --way and --shot"
        )
    return way, n_support // way


def write_testcase(path: Path, testcase: Testcase) -> None:
    """Write ``testcase`` in the course format, atomically."""
    n_support, n_query = testcase.support_ids.shape[1], testcase.query_ids.shape[1]
    columns = ["episode_id"] + [f"support{i}" for i in range(n_support)] + [f"query{i}" for i in range(n_query)]
    rows = np.column_stack([testcase.episode_ids, testcase.support_ids, testcase.query_ids])
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False)


def truth_path(testcase_path: Path) -> Path:
    """The conventional ground-truth file of a testcase file: ``val_testcase.csv`` -> ``val_testcase_gt.csv``."""
    return testcase_path.with_name(f"{testcase_path.stem}_gt.csv")


def resolve_episodes(path: Path, testcase: Testcase, bank: ImageBank, truth: np.ndarray | None) -> list[Episode]:
    """Turn a testcase's ids into bank rows; ``truth`` ``(E, n_query)`` gives query labels (else -1)."""
    if truth is not None and truth.shape != testcase.query_ids.shape:
        raise DataError(f"{path}: ground truth has shape {truth.shape}, episodes have {testcase.query_ids.shape}")
    episodes = []
    for row, episode_id in enumerate(testcase.episode_ids):
        where = f"{path}, line {row + 2} (episode {episode_id})"
        labels = (
            torch.from_numpy(truth[row])
            if truth is not None
            else torch.full((testcase.spec.way * testcase.spec.query,), -1)
        )
        support = bank.rows_of(testcase.support_ids[row], where)
        _check_support_classes(bank, support, testcase, row, where)
        episodes.append(Episode(testcase.spec, support, bank.rows_of(testcase.query_ids[row], where), labels.long()))
    return episodes


def _check_support_classes(bank: ImageBank, support: torch.Tensor, testcase: Testcase, row: int, where: str) -> None:
    """The support of an episode is ``shot`` images of each of ``way`` different classes, class by class; a
    split whose labels say otherwise (two slots of one class) would be scored as if they were two classes. A
    split without real labels (a single class) cannot be checked."""
    if len(bank.classes) < testcase.spec.way:
        return
    groups = bank.labels[support].view(testcase.spec.way, testcase.spec.shot)
    ids = testcase.support_ids[row].reshape(testcase.spec.way, testcase.spec.shot)
    for c, group in enumerate(groups):
        if (group != group[0]).any():
            raise DataError(f"{where}: support images {', '.join(ids[c])} of class slot {c} have different labels")
    seen: dict[int, int] = {}
    for c, label in enumerate(groups[:, 0].tolist()):
        if label in seen:
            first = seen[label]
            raise DataError(
                f"{where}: support images {ids[first][0]} and {ids[c][0]} are both of class "
                f"{bank.classes[label]!r}: an episode's support needs {testcase.spec.way} different classes"
            )
        seen[label] = c


def load_fixed_episodes(path: Path, bank: ImageBank, way: int, shot: int) -> tuple[Testcase, list[Episode]]:
    """Read a testcase file and its ground truth (if ``<name>_gt.csv`` exists) as episodes of ``bank``."""
    testcase = read_testcase(path, way, shot)
    gt = truth_path(path)
    truth = None
    if gt.is_file():
        gt_ids, truth = read_predictions(gt)
        if gt_ids != testcase.episode_ids:
            raise DataError(f"{gt}: episode ids differ from those of {path}")
        if truth.shape[1] != testcase.query_ids.shape[1]:
            raise DataError(_other_shape(path, testcase, truth.shape[1]))
        if ((truth < 0) | (truth >= way)).any():
            line, column = np.argwhere((truth < 0) | (truth >= way))[0]
            raise DataError(f"{gt}: line {line + 2}, query{column}: label {truth[line, column]} is not in 0..{way - 1}")
    return testcase, resolve_episodes(path, testcase, bank, truth)


def _other_shape(path: Path, testcase: Testcase, n_query: int) -> str:
    """Why a testcase read as ``testcase.spec`` disagrees with its answers' ``n_query`` queries, and the episode
    shapes its ids do make."""
    spec, total = testcase.spec, testcase.support_ids.shape[1] + testcase.query_ids.shape[1]
    fits = [
        f"{way}-way {(total - n_query) // way}-shot"
        for way in range(2, total - n_query + 1)
        if (total - n_query) % way == 0 and n_query % way == 0
    ]
    return (
        f"{path}: its episodes are not {spec.way}-way {spec.shot}-shot: that would leave "
        f"{testcase.query_ids.shape[1]} query ids, but its answers ({truth_path(path).name}) have {n_query}; "
        f"its {total} ids per episode make {' or '.join(fits) or 'no such episode'} (set eval_episode.way and .shot)"
    )


def generate_testcase(
    table: ImageTable, spec: EpisodeSpec, n_episodes: int = 600, seed: int = 0
) -> tuple[Testcase, np.ndarray]:
    """Draw ``n_episodes`` fixed episodes with shuffled queries; returns the testcase and its answers."""
    sampler = EpisodeSampler(table.label_indices(), table.classes, spec, seed)
    ids = np.asarray(table.ids)
    support, query, truth = [], [], []
    for index in range(n_episodes):
        episode = sampler[index]
        order = torch.randperm(len(episode.query), generator=torch.Generator().manual_seed(seed + index))
        support.append(ids[episode.support.numpy()])
        query.append(ids[episode.query[order].numpy()])
        truth.append(episode.query_labels[order].numpy())
    testcase = Testcase(spec, tuple(str(i) for i in range(n_episodes)), np.stack(support), np.stack(query))
    return testcase, np.stack(truth)


def write_fixed_episodes(path: Path, testcase: Testcase, truth: np.ndarray) -> None:
    """Write a testcase file and its ``_gt.csv`` answers (answers first: a testcase file implies its answers)."""
    write_predictions(truth_path(path), testcase.episode_ids, truth)
    write_testcase(path, testcase)
