"""From a :class:`~fewshot.config.DataConfig` to what a few-shot run needs: decoded train and validation
banks and the fixed validation episodes, all checked before any training starts."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fewshot.config.schema import DataConfig, EpisodeSpec
from fewshot.data.builtin import ensure_builtin
from fewshot.data.cache import ImageBank, load_bank
from fewshot.data.episodes import Episode, EpisodeSampler
from fewshot.data.tables import FEWSHOT_DIRS, ImageTable, open_split
from fewshot.data.testcase import Testcase, generate_testcase, load_fixed_episodes, write_fixed_episodes
from fewshot.errors import DataError
from fewshot.paths import cache_root

log = logging.getLogger(__name__)

# How a split becomes a bank: ``(table, image_size, resize, cache_dir) -> ImageBank``. The default decodes
# through the on-disk cache; a cluster passes one that reads a bank already shared in memory.
BankLoader = Callable[[ImageTable, int, bool, Path | None], ImageBank]

# Generated evaluation episodes depend on the data and the episode shape alone, never on a run's seed: every
# run, seed and method of a comparison is scored on the same episodes.
EPISODES_SEED = 0
RESIDENT_SHARE = 0.25  # automatic residency: a bank may take this share of the GPU's free memory


@dataclass(frozen=True)
class FewShotData:
    """Decoded splits and the fixed evaluation episodes (``testcase_path`` holds them in course format)."""

    root: Path
    train: ImageBank
    val: ImageBank
    testcase_path: Path
    testcase: Testcase
    val_episodes: list[Episode]


def data_root(config: DataConfig) -> Path:
    """The configured data root, or the built-in dataset (generated on first use) when none is set."""
    return Path(config.root).expanduser().resolve() if config.root is not None else ensure_builtin()


def check_splits(
    config: DataConfig, train_spec: EpisodeSpec | None = None, dirs: tuple[str, ...] = FEWSHOT_DIRS
) -> tuple[ImageTable, ImageTable]:
    """Read and validate the train and validation tables (every image file must exist) and, given a training
    episode shape, check the train split can fill it — without decoding anything. A job calls this before it
    starts Ray, so a data mistake is one line at once, not a failed run per configuration."""
    root = data_root(config)
    train, val = open_split(root, config.train_split, dirs), open_split(root, config.val_split, dirs)
    if train_spec is not None:
        check_fills(train, train_spec, config.train_split)
    return train, val


def check_fills(table: ImageTable, spec: EpisodeSpec, split: str) -> None:
    """That ``table`` has the classes and images per class ``spec`` episodes need; else a :class:`DataError`
    naming the split and its file."""
    try:
        EpisodeSampler(table.label_indices(), table.classes, spec, 0)
    except DataError as err:
        raise DataError(f"{table.source} ({split} split): {err}") from None


def load_fewshot_data(
    config: DataConfig, train_spec: EpisodeSpec, eval_spec: EpisodeSpec, load: BankLoader = load_bank
) -> FewShotData:
    """Read, validate and decode the train and validation splits and their evaluation episodes.

    Every user mistake — a missing file, an episode shape the data cannot fill, an unknown image id in the
    testcase file — surfaces here as a :class:`DataError`, before the first training step.
    """
    root = data_root(config)
    train_table = open_split(root, config.train_split)
    val_table = open_split(root, config.val_split)
    check_fills(train_table, train_spec, config.train_split)
    testcase_path = config.val_episodes or _default_testcase(config, val_table, eval_spec)
    train = load(train_table, config.image_size, config.resize, config.cache_dir)
    val = load(val_table, config.image_size, config.resize, config.cache_dir)
    testcase, episodes = load_fixed_episodes(Path(testcase_path), val, eval_spec.way, eval_spec.shot)
    if config.val_episodes is None and testcase.spec != eval_spec:
        raise DataError(f"{testcase_path}: holds {testcase.spec} episodes, the run evaluates {eval_spec}")
    if any((e.query_labels < 0).any() for e in episodes):
        raise DataError(f"{testcase_path}: validation episodes need answers, but no ground-truth file was found")
    log.info(
        "data: %d train images (%d classes), %d val images, %d %s val episodes from %s",
        len(train),
        len(train.classes),
        len(val),
        len(episodes),
        testcase.spec,
        testcase_path,
    )
    return FewShotData(root, train, val, Path(testcase_path), testcase, episodes)


def _default_testcase(config: DataConfig, table: ImageTable, spec: EpisodeSpec) -> Path:
    """The course's ``<split>_testcase.csv`` beside the split if it holds ``spec`` episodes, else a generated
    file of ``config.n_val_episodes`` seeded episodes in the cache (the same every time)."""
    folder = table.source.parent
    beside = folder / f"{config.val_split}_testcase.csv"
    if beside.is_file() and _n_columns(beside) == 1 + spec.way * (spec.shot + spec.query):
        return beside
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr((table.ids, table.labels, spec, config.n_val_episodes, EPISODES_SEED)).encode())
    path = (
        cache_root() / "episodes" / f"{config.val_split}-{spec.way}w{spec.shot}s{spec.query}q-{digest.hexdigest()}.csv"
    )
    if not path.is_file():
        check_fills(table, spec, config.val_split)
        log.info("generating %d fixed %s episodes into %s", config.n_val_episodes, spec, path)
        testcase, truth = generate_testcase(table, spec, config.n_val_episodes, EPISODES_SEED)
        write_fixed_episodes(path, testcase, truth)
    return path


def _n_columns(path: Path) -> int:
    with path.open() as handle:
        return len(handle.readline().split(","))


def keep_resident(bank: ImageBank, device: torch.device, resident: bool | None) -> ImageBank:
    """``bank`` on ``device`` when ``resident`` (None: on CUDA, when it fits in a quarter of the free memory)."""
    if device.type == "cpu" or bank.images.device == device:
        return bank
    if resident is None:
        free, _ = torch.cuda.mem_get_info(device) if device.type == "cuda" else (0, 0)
        resident = bank.images.numel() <= RESIDENT_SHARE * free
        if not resident:
            share = f"more than {RESIDENT_SHARE:.0%} of the {free / 2**20:.0f} MiB free on {device}"
            log.info("%d images (%.0f MiB) stay in host memory: %s", len(bank), bank.images.numel() / 2**20, share)
    return bank.to(device) if resident else bank


def resident_loader(load: BankLoader, device: torch.device, resident: bool | None) -> BankLoader:
    """``load``, with every bank it gives kept on ``device`` as :func:`keep_resident` decides."""

    def loader(table: ImageTable, image_size: int, resize: bool, cache_dir: Path | None) -> ImageBank:
        return keep_resident(load(table, image_size, resize, cache_dir), device, resident)

    return loader
