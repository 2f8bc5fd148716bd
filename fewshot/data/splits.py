"""From a :class:`~fewshot.config.DataConfig` to what a few-shot run needs: the decoded splits, the fixed episodes
that choose its checkpoint and those its score is reported on, all checked before any training starts."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fewshot.config.schema import DataConfig, EpisodeSpec
from fewshot.data.builtin import ensure_builtin
from fewshot.data.cache import ImageBank, load_bank
from fewshot.data.episodes import Episode, EpisodeSampler
from fewshot.data.tables import FEWSHOT_DIRS, ImageTable, find_split, open_split
from fewshot.data.testcase import (
    Testcase,
    generate_testcase,
    load_fixed_episodes,
    read_testcase,
    write_fixed_episodes,
)
from fewshot.errors import DataError
from fewshot.paths import cache_root

log = logging.getLogger(__name__)

# How a split becomes a bank: ``(table, image_size, resize, cache_dir) -> ImageBank``. The default decodes
# through the on-disk cache; a cluster passes one that reads a bank already shared in memory.
BankLoader = Callable[[ImageTable, int, bool, Path | None], ImageBank]

# Generated episodes depend on the data, the episode shape and their role alone, never on a run's seed: every
# run, seed and method of a comparison is selected on the same episodes and scored on the same episodes.
EPISODES_SEED = 0  # the episodes a score is reported on, when generated
SELECTION_SEED = 1  # selection episodes drawn from the split the score is reported on (data without a test split)
RESIDENT_SHARE = 0.25  # automatic residency: a bank may take this share of the GPU's free memory


@dataclass(frozen=True)
class FixedEpisodes:
    """Fixed episodes of one split: its decoded ``bank``, the testcase file (course format) and the episodes."""

    split: str
    bank: ImageBank
    path: Path
    testcase: Testcase
    episodes: list[Episode]


@dataclass(frozen=True)
class Protocol:
    """What chooses a run's checkpoint and what its score is reported on: ``name`` is the MLflow tag
    (``test-split``, ``val-disjoint`` or ``val-reseeded``; fine-tuning's ``last-epoch``), :meth:`describe` the
    line under a table."""

    name: str
    select: str  # e.g. "the best epoch on 200 val episodes (val_testcase.csv)"
    report: str  # e.g. "600 test episodes (test-5w1s15q-….csv)"

    def describe(self) -> str:
        return f"protocol {self.name}: checkpoint = {self.select}; score on {self.report}"


@dataclass(frozen=True)
class FewShotData:
    """The decoded train split, the episodes that choose the checkpoint (``select``) and those the run's score
    is reported on (``report``), and the :class:`Protocol` that relates them."""

    root: Path
    train: ImageBank
    select: FixedEpisodes
    report: FixedEpisodes
    protocol: Protocol

    @property
    def inputs(self) -> tuple[tuple[str, ImageBank], ...]:
        """The decoded splits by role: ``train``, ``selection``, ``report``."""
        return ("train", self.train), ("selection", self.select.bank), ("report", self.report.bank)


def data_root(config: DataConfig) -> Path:
    """The configured data root, or the built-in dataset (generated on first use) when none is set."""
    return Path(config.root).expanduser().resolve() if config.root is not None else ensure_builtin()


def held_out_table(config: DataConfig, dirs: tuple[str, ...] = FEWSHOT_DIRS) -> ImageTable | None:
    """The data's test split (``config.test_split``), or None when it has none (or the root is one CSV file)."""
    root = data_root(config)
    if config.test_split is None or root.is_file():
        return None
    return find_split(root, config.test_split, dirs)


def check_splits(
    config: DataConfig,
    train_spec: EpisodeSpec | None = None,
    dirs: tuple[str, ...] = FEWSHOT_DIRS,
    test: bool = True,
) -> tuple[ImageTable, ...]:
    """Read and validate the train and validation tables, and the test table when ``test`` and the data has
    one (every image file must exist), and, given a training episode shape, check the train split can fill it —
    without decoding anything. A job calls this before it starts Ray, so a data mistake is one line at once, not
    a failed run per configuration."""
    root = data_root(config)
    train, val = open_split(root, config.train_split, dirs), open_split(root, config.val_split, dirs)
    if train_spec is not None:
        check_fills(train, train_spec, config.train_split)
    held_out = held_out_table(config, dirs) if test else None
    return (train, val) if held_out is None else (train, val, held_out)


def decode_splits(
    config: DataConfig,
    train_spec: EpisodeSpec | None = None,
    dirs: tuple[str, ...] = FEWSHOT_DIRS,
    test: bool = True,
) -> tuple[ImageTable, ...]:
    """:func:`check_splits`, then decode every split into the disk cache: a corrupt or truncated image is one
    line naming it now — before a job starts Ray — and the runs read the decoded splits, no second decode."""
    tables = check_splits(config, train_spec, dirs, test)
    for table in tables:
        load_bank(table, config.image_size, config.resize, config.cache_dir)
    return tables


def check_fills(table: ImageTable, spec: EpisodeSpec, split: str) -> None:
    """That ``table`` has the classes and images per class ``spec`` episodes need; else a :class:`DataError`
    naming the split and its file."""
    try:
        EpisodeSampler(table.label_indices(), table.classes, spec, 0)
    except DataError as err:
        raise DataError(f"{table.source} ({split} split): {err}") from None


def load_fewshot_data(
    config: DataConfig,
    train_spec: EpisodeSpec,
    eval_spec: EpisodeSpec,
    load: BankLoader = load_bank,
    n_select: int | None = None,
) -> FewShotData:
    """Read, validate and decode the splits and the fixed episodes that select and report.

    With a test split, the checkpoint is chosen on validation episodes and the score reported on test episodes:
    other classes, other images. Without one (the course's own layout), the score is reported on the validation
    episodes (``val_testcase.csv``) and the checkpoint chosen on episodes drawn with a seed of their own, from
    the validation images that are never a query of a reported episode when those can fill them.

    Every user mistake — a missing file, an episode shape the data cannot fill, an unknown image id in the
    testcase file — surfaces here as a :class:`DataError`, before the first training step. ``n_select``: how
    many of the selection episodes choose the checkpoint (the first ones; None: all).
    """
    root = data_root(config)
    train_table = open_split(root, config.train_split)
    val_table = open_split(root, config.val_split)
    check_fills(train_table, train_spec, config.train_split)
    held_out = held_out_table(config)
    if held_out is not None:  # every episode file found (or generated) and checked before anything is decoded
        select_path = config.val_episodes or _default_testcase(config, val_table, eval_spec)
        report_path = config.test_episodes or _default_testcase(config, held_out, eval_spec)
        roles, given, disjoint = (val_table, held_out), (config.val_episodes, config.test_episodes), True
    else:
        if config.test_episodes is not None:
            raise DataError(
                f"data.test_episodes is {config.test_episodes}, but {root} has no {config.test_split!r} split"
            )
        report_path = config.val_episodes or _default_testcase(config, val_table, eval_spec)
        reported = read_testcase(Path(report_path), eval_spec.way, eval_spec.shot).query_ids
        select_path, disjoint = _selection(config, val_table, eval_spec, set(reported.ravel().tolist()))
        roles, given = (val_table, val_table), (None, config.val_episodes)
    banks = {t.source: load(t, config.image_size, config.resize, config.cache_dir) for t in (train_table, *roles)}
    train = banks[train_table.source]
    select, report = (
        _fixed(table, banks[table.source], Path(path), eval_spec, user is None)
        for table, path, user in zip(roles, (select_path, report_path), given, strict=True)
    )
    select = replace(select, episodes=select.episodes[:n_select])
    chosen = f"the best epoch on {_episodes(select)}"
    if held_out is not None:
        protocol = Protocol("test-split", chosen, _episodes(report))
    elif disjoint:
        protocol = Protocol("val-disjoint", f"{chosen} whose queries are never a reported query", _episodes(report))
    else:
        protocol = Protocol("val-reseeded", f"{chosen} of the same images", _episodes(report))
    log.info("data: %d train images (%d classes); %s", len(train), len(train.classes), protocol.describe())
    return FewShotData(root, train, select, report, protocol)


def _episodes(fixed: FixedEpisodes) -> str:
    return f"{len(fixed.episodes)} {fixed.split} episodes ({fixed.path.name})"


def _fixed(table: ImageTable, bank: ImageBank, path: Path, spec: EpisodeSpec, exact: bool) -> FixedEpisodes:
    """The fixed ``spec`` episodes of ``table``'s split in ``path``; unless ``exact``, (a file the user gave) it
    may hold another number of queries."""
    testcase, episodes = load_fixed_episodes(path, bank, spec.way, spec.shot)
    if exact and testcase.spec != spec:
        raise DataError(f"{path}: holds {testcase.spec} episodes, the run evaluates {spec}")
    if any((e.query_labels < 0).any() for e in episodes):
        raise DataError(f"{path}: fixed episodes need answers, but no ground-truth file was found")
    return FixedEpisodes(_split_name(table), bank, path, testcase, episodes)


def _split_name(table: ImageTable) -> str:
    return table.source.stem if table.source.suffix == ".csv" else table.source.name


def _selection(config: DataConfig, table: ImageTable, spec: EpisodeSpec, reported: set[str]) -> tuple[Path, bool]:
    """Selection episodes for data without a test split, drawn with :data:`SELECTION_SEED`: from the images that
    are never a ``reported`` query when they can fill ``spec`` episodes (True), else from the whole split."""
    free = table.take([i for i, image_id in enumerate(table.ids) if image_id not in reported])
    try:
        EpisodeSampler(free.label_indices(), free.classes, spec, SELECTION_SEED)
    except DataError:
        free = table
    return _generated(config, free, spec, SELECTION_SEED, f"{_split_name(table)}-select"), free is not table


def _default_testcase(config: DataConfig, table: ImageTable, spec: EpisodeSpec) -> Path:
    """The course's ``<split>_testcase.csv`` beside the split if it holds ``spec`` episodes, else a generated
    file of ``config.n_val_episodes`` seeded episodes in the cache (the same every time)."""
    split = _split_name(table)
    beside = table.source.parent / f"{split}_testcase.csv"
    if beside.is_file() and _n_columns(beside) == 1 + spec.way * (spec.shot + spec.query):
        return beside
    return _generated(config, table, spec, EPISODES_SEED, split)


def _generated(config: DataConfig, table: ImageTable, spec: EpisodeSpec, seed: int, name: str) -> Path:
    """``config.n_val_episodes`` episodes of ``table`` drawn with ``seed``, generated once into the cache."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr((table.ids, table.labels, spec, config.n_val_episodes, seed)).encode())
    path = cache_root() / "episodes" / f"{name}-{spec.way}w{spec.shot}s{spec.query}q-{digest.hexdigest()}.csv"
    if not path.is_file():
        check_fills(table, spec, name)
        log.info("generating %d fixed %s episodes into %s", config.n_val_episodes, spec, path)
        testcase, truth = generate_testcase(table, spec, config.n_val_episodes, seed)
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
