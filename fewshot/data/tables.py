"""Image tables: which images exist, where they are, and their class label.

Readers for the layouts users bring, unchanged:

- the course's few-shot layout: ``train.csv`` / ``val.csv`` (columns ``id,filename,label``) next to image
  folders ``train/`` / ``val/``, either at the top (Fall 2020: ``hw4_data/train.csv``) or under ``mini/``
  (Fall 2021: ``hw4_data/mini/train.csv``);
- the Office-Home layout: ``office/{train,val}.csv`` with the same columns;
- a plain ImageFolder tree: one sub-folder per class.

A table is validated once when it is read, so a missing column or image is reported before any training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from fewshot.data.csvfile import read_text_csv
from fewshot.errors import DataError, one_line

REQUIRED_COLUMNS = ("id", "filename", "label")

# Folders, relative to a data root, where a split's CSV (or ImageFolder) may live.
FEWSHOT_DIRS = ("", "mini", "hw4_data", "hw4_data/mini")
OFFICE_DIRS = ("office", "hw4_data/office", "")


@dataclass(frozen=True)
class ImageTable:
    """Labelled images: parallel columns ``ids``, ``paths`` (absolute) and ``labels`` (class strings)."""

    source: Path
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.paths) == len(self.labels)):
            raise ValueError("ids, paths and labels must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class labels in order of first appearance."""
        return tuple(dict.fromkeys(self.labels))

    def take(self, rows: list[int]) -> ImageTable:
        """The images at ``rows``, in that order (same source)."""
        ids = tuple(self.ids[i] for i in rows)
        paths = tuple(self.paths[i] for i in rows)
        return replace(self, ids=ids, paths=paths, labels=tuple(self.labels[i] for i in rows))

    def label_indices(self) -> torch.Tensor:
        """``(N,)`` int64 class index of every image, into :attr:`classes`."""
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[c] for c in self.labels], dtype=torch.long)


def read_image_csv(csv_path: Path, image_dir: Path | None = None) -> ImageTable:
    """Read a course image CSV (``id,filename,label``); images live in ``image_dir``.

    ``image_dir`` defaults to the folder beside the CSV named like it (``mini/train.csv`` -> ``mini/train/``).
    """
    csv_path = Path(csv_path)
    image_dir = Path(image_dir) if image_dir is not None else csv_path.with_suffix("")
    frame = read_text_csv(csv_path, blank_as_na=True)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; "
            f"an image CSV needs {', '.join(REQUIRED_COLUMNS)} (found: {one_line(', '.join(frame.columns))})"
        )
    frame = frame[list(REQUIRED_COLUMNS)]
    blank = frame.isna().any(axis=1) | (frame.apply(lambda col: col.str.strip()) == "").any(axis=1)
    if blank.any():
        row = int(blank.idxmax())
        raise DataError(f"{csv_path}: line {row + 2} has an empty id, filename or label")
    padded = frame["label"] != frame["label"].str.strip()
    if padded.any():  # "boot " would silently be a class of its own beside "boot"
        row, label = int(padded.idxmax()), frame["label"][padded.idxmax()]
        raise DataError(f"{csv_path}: line {row + 2}: label {label!r} has spaces around it (remove them)")
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        row = int(duplicated.idxmax())
        value = frame["id"][row]
        first = int((frame["id"] == value).idxmax())
        raise DataError(f"{csv_path}: id {value!r} is on line {first + 2} and again on line {row + 2}")
    if not image_dir.is_dir():
        raise DataError(f"{csv_path}: image folder {image_dir} does not exist")
    paths = tuple(image_dir / name for name in frame["filename"])
    _check_files_exist(csv_path, paths)
    return ImageTable(csv_path, tuple(frame["id"]), paths, tuple(frame["label"]))


def read_image_folder(root: Path) -> ImageTable:
    """Read an ImageFolder tree (``root/<class>/<image>``); ids are paths relative to ``root``."""
    root = Path(root)
    try:
        _, class_to_idx = find_classes(str(root))
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"{root}: not an image folder tree (one sub-folder of images per class): {err}") from err
    index_to_class = {i: c for c, i in class_to_idx.items()}
    paths = tuple(Path(p) for p, _ in samples)
    ids = tuple(str(p.relative_to(root)) for p in paths)
    return ImageTable(root, ids, paths, tuple(index_to_class[i] for _, i in samples))


def open_split(root: Path, split: str, dirs: tuple[str, ...] = FEWSHOT_DIRS) -> ImageTable:
    """Find and read ``split`` (e.g. ``"train"``) of a dataset root in any supported layout.

    Looks in each of ``dirs`` under ``root`` for ``<split>.csv`` (course layout), then for a ``<split>/``
    ImageFolder tree. ``root`` may also be the CSV file itself.
    """
    root = Path(root)
    if root.is_file():
        return read_image_csv(root)
    table = find_split(root, split, dirs)
    if table is None:
        tried = ", ".join(str(root / d / f"{split}.csv") for d in dirs)
        raise DataError(f"no '{split}' split under {root}: looked for {tried} and ImageFolder trees beside them")
    return table


def find_split(root: Path, split: str, dirs: tuple[str, ...] = FEWSHOT_DIRS) -> ImageTable | None:
    """``split`` of the data folder ``root`` as :func:`open_split` finds it, or None when it has none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist")
    for sub in dirs:
        csv_path = root / sub / f"{split}.csv"
        if csv_path.is_file():
            return read_image_csv(csv_path)
    for sub in dirs:
        folder = root / sub / split
        if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
            return read_image_folder(folder)
    return None


def _check_files_exist(csv_path: Path, paths: tuple[Path, ...]) -> None:
    missing = [(row, p) for row, p in enumerate(paths) if not p.is_file()]
    if missing:
        row, first = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{csv_path}: line {row + 2}: image file {first} does not exist{more}")
