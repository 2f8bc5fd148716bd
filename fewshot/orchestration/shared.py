"""Decode once per cluster: the banks of a dataset go into Ray's object store, and every trial reads them there.

The driver decodes (or maps from the on-disk cache) each split once and ``ray.put``\\s its uint8 array. A
trial's workers get the arrays with ``ray.get``: on the driver's node that is a zero-copy view of the shared
memory segment, and on another node Ray copies the object once into that node's store, where every trial of
the node shares it. N concurrent trials therefore hold one copy of the dataset per node, not N.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch

from fewshot.config.schema import DataConfig
from fewshot.data.cache import ImageBank, load_bank
from fewshot.data.splits import check_splits, data_root
from fewshot.data.tables import FEWSHOT_DIRS, ImageTable, open_split

log = logging.getLogger(__name__)

BankKey = tuple[str, int, bool]  # (split table file, image size, resize)


@dataclass(frozen=True)
class SharedBanks:
    """Object-store references to decoded banks, keyed by split file and decode settings.

    Pass it to workers inside any Ray payload; :meth:`load` is a
    :data:`~fewshot.data.splits.BankLoader` that serves known splits from the object store and falls back
    to the on-disk cache for any other.
    """

    refs: dict[BankKey, ray.ObjectRef] = field(default_factory=dict)
    digests: dict[BankKey, str] = field(default_factory=dict)  # each bank's content hash (ImageBank.digest)

    def share(
        self, table: ImageTable, image_size: int, resize: bool, images: np.ndarray, digest: str = ""
    ) -> SharedBanks:
        """These banks plus ``table``'s decoded ``images`` (``(N, 3, S, S)`` uint8), put in the object store."""
        key = _key(table, image_size, resize)
        ref = ray.put(np.ascontiguousarray(images))
        return SharedBanks({**self.refs, key: ref}, {**self.digests, key: digest})

    def load(self, table: ImageTable, image_size: int, resize: bool, cache_dir: Path | None) -> ImageBank:
        ref = self.refs.get(_key(table, image_size, resize))
        if ref is None:
            return load_bank(table, image_size, resize, cache_dir)
        array: np.ndarray = ray.get(ref)  # read-only view of the shared segment: no copy
        if len(array) != len(table):  # the split changed on disk since the driver shared it
            return load_bank(table, image_size, resize, cache_dir)
        with warnings.catch_warnings():  # banks are only ever indexed (copied out), never written
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            images = torch.from_numpy(array)
        digest = self.digests.get(_key(table, image_size, resize), "")
        return ImageBank(images, table.label_indices(), table.classes, table.ids, str(table.source), digest)


def share_banks(
    config: DataConfig, splits: tuple[str, ...] | None = None, dirs: tuple[str, ...] = FEWSHOT_DIRS
) -> SharedBanks:
    """Decode ``splits`` (default: every split a run on ``config`` reads — train, validation, and a few-shot
    dataset's test split when it has one; found in ``dirs`` of the root, e.g. Office-Home's) and put them in the
    store."""
    root = data_root(config)
    tables = (
        [open_split(root, split, dirs) for split in splits]
        if splits is not None
        else check_splits(config, dirs=dirs, test=dirs == FEWSHOT_DIRS)
    )
    shared = SharedBanks()
    for table in tables:
        bank = load_bank(table, config.image_size, config.resize, config.cache_dir)
        shared = shared.share(table, config.image_size, config.resize, bank.images.numpy(), bank.digest)
        size = bank.images.numel() / 2**20
        log.info("shared %s (%d images, %.0f MiB) in the object store", table.source.name, len(bank), size)
    return shared


def _key(table: ImageTable, image_size: int, resize: bool) -> BankKey:
    return (str(Path(table.source).resolve()), image_size, resize)
