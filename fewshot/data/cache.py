"""Decode once: an :class:`ImageBank` holds a whole split as one ``(N, 3, H, W)`` uint8 tensor.

Decoding JPEGs costs ~0.1 ms an image with torchvision, far more with PIL; an episode then costs only an
index into the bank. The decoded array is stored as a ``.npy`` file in the cache folder, keyed by a hash of
the image table, every image file's bytes and the decode settings, and memory-mapped on later runs: a changed
image, label or size gives a new key and the bank is rebuilt. The file is written under a temporary name and
renamed into place, so a crash never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from fewshot.data.tables import ImageTable
from fewshot.errors import DataError, one_line
from fewshot.paths import cache_root, writable

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the stored layout or the decoding changes (2: EXIF orientation, 16-bit scaled)


@dataclass(frozen=True)
class ImageBank:
    """A decoded split: ``images[i]`` is the image with id ``ids[i]`` and class index ``labels[i]``; ``source``
    is its image table's file and ``digest`` the hash of that table, every image's bytes and the decode
    settings (the cache key): two banks of one digest hold the same data."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64, indices into ``classes``
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    source: str = ""
    digest: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, ids: list[str] | tuple[str, ...], where: str) -> torch.Tensor:
        """Row indices of ``ids``; ``where`` names the file and row the ids came from, for errors."""
        try:
            return torch.tensor([self._row_of[i] for i in ids], dtype=torch.long)
        except KeyError as err:
            raise DataError(f"{where}: image id {err.args[0]!r} is not in the image table") from None

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {image_id: row for row, image_id in enumerate(self.ids)}

    def to(self, device: torch.device | str) -> ImageBank:
        """The same bank with its images on ``device`` (kept resident on a GPU); the labels, which samplers
        read on the CPU, stay where they are."""
        return replace(self, images=self.images.to(device))


def load_bank(table: ImageTable, image_size: int, resize: bool = False, cache_dir: Path | None = None) -> ImageBank:
    """Decode ``table`` into an :class:`ImageBank` of ``image_size`` square images, reusing the cache.

    With ``resize=False`` every image must already be ``image_size`` square (mini-ImageNet's 84x84);
    otherwise images are resized (Office-Home).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / "banks"
    key = _cache_key(table, image_size, resize)
    path = cache_dir / f"bank-{key}.npy"
    if path.is_file():
        array = np.load(path, mmap_mode="c")  # copy-on-write: shared pages, writable for torch
    elif writable(cache_dir):
        _build(table, image_size, resize, path)
        array = np.load(path, mmap_mode="c")
    else:  # a read-only cache still serves the banks it holds; a new one is decoded for this process alone
        log.warning("cache folder %s is not writable: decoding %s in memory, not kept", cache_dir, table.source)
        array = _decode_all(table, image_size, resize, np.empty((len(table), 3, image_size, image_size), np.uint8))
    return ImageBank(torch.from_numpy(array), table.label_indices(), table.classes, table.ids, str(table.source), key)


def _cache_key(table: ImageTable, image_size: int, resize: bool) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{CACHE_FORMAT}|{image_size}|{resize}|{len(table)}".encode())
    for image_id, path, label in zip(table.ids, table.paths, table.labels, strict=True):
        digest.update(f"|{image_id}|{label}|".encode())
        digest.update(_read_bytes(table, path))
    return digest.hexdigest()


def _build(table: ImageTable, image_size: int, resize: bool, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npy")
    log.info("decoding %d images of %s into %s", len(table), table.source, path)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(table), 3, image_size, image_size))
        _decode_all(table, image_size, resize, out)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_all(table: ImageTable, image_size: int, resize: bool, out: np.ndarray) -> np.ndarray:
    """Decode every image of ``table`` into ``out`` (``(N, 3, S, S)`` uint8), logging progress by tenths."""
    start, reported = time.monotonic(), 0
    for row, image_path in enumerate(table.paths):
        out[row] = _decode(table, image_path, image_size, resize).numpy()
        if (row + 1) * 10 // len(table) > reported:
            reported = (row + 1) * 10 // len(table)
            log.info("  decoded %d/%d images (%.1fs)", row + 1, len(table), time.monotonic() - start)
    return out


def _decode(table: ImageTable, image_path: Path, image_size: int, resize: bool) -> torch.Tensor:
    raw = _read_bytes(table, image_path)
    if not raw:  # torch.frombuffer rejects an empty buffer with a bare ValueError
        raise DataError(f"{table.source}: image {image_path} is corrupt or not an image (the file is empty)")
    try:
        image = decode_rgb(raw)
    except (RuntimeError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"{table.source}: image {image_path} is corrupt or not an image ({one_line(str(err))})"
        ) from None
    height, width = image.shape[-2:]
    if (height, width) != (image_size, image_size):
        if not resize:
            raise DataError(
                f"{table.source}: image {image_path} is {width}x{height}, expected {image_size}x{image_size} "
                "(set data.resize=true to resize images when they are decoded)"
            )
        image = TF.resize(image, [image_size, image_size], antialias=True)
    return image


def decode_rgb(raw: bytes) -> torch.Tensor:
    """An encoded image as ``(3, H, W)`` uint8 RGB, upright: palette, grey and alpha images become RGB, a CMYK
    JPEG is converted, 16-bit images are scaled to 8 bits (not cut), and EXIF orientation is applied. JPEG, PNG,
    WebP and GIF are decoded by torchvision, any other format PIL reads (BMP, TIFF...) by PIL."""
    try:
        image = decode_image(
            torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.RGB, apply_exif_orientation=True
        )
    except RuntimeError as err:
        if "Unsupported image file" not in str(err):
            raise
        image = _decode_with_pil(raw)
    return TF.to_dtype(image, torch.uint8, scale=True) if image.dtype != torch.uint8 else image


def _decode_with_pil(raw: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(raw)) as opened:
        picture = ImageOps.exif_transpose(opened)
        if picture.mode.startswith("I"):  # 16/32-bit grey: PIL's own conversion to RGB clips at 255
            grey = np.asarray(picture, dtype=np.int64)
            picture = Image.fromarray((grey >> 8 if grey.max() > 255 else grey).clip(0, 255).astype(np.uint8))
        return torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1).contiguous()


def _read_bytes(table: ImageTable, image_path: Path) -> bytes:
    try:
        return image_path.read_bytes()
    except OSError as err:
        raise DataError(f"{table.source}: cannot read image {image_path} ({err.strerror})") from None
