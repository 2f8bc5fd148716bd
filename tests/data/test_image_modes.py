"""Every image mode a user's files may come in decodes to the picture it shows, or is refused by name: 16-bit,
palette, grey + alpha, CMYK, EXIF-rotated, formats torchvision does not read. The oracle is the picture itself
(correlation with the array the file was made from), not another decoder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot.data.cache import decode_rgb, load_bank
from fewshot.data.tables import read_image_csv
from fewshot.errors import DataError

SIZE = 24
_ramp = np.add.outer(np.arange(SIZE), 2 * np.arange(SIZE)) * 255 // (3 * (SIZE - 1))
GREY = _ramp.astype(np.uint8)  # a diagonal ramp: any flip, rotation or noise breaks the correlation
RGB = np.stack([GREY, 255 - GREY, GREY // 2 + 60], axis=-1).astype(np.uint8)
GREY3 = np.stack([GREY] * 3, axis=-1)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    """A JPEG stored on its side with EXIF orientation 6 (view rotated 90° clockwise): it shows ``RGB``."""
    stored = Image.fromarray(np.rot90(RGB, 1).copy())  # what a camera held on its side writes
    exif = stored.getexif()
    exif[0x0112] = 6
    return _encode(stored, "JPEG", quality=98, exif=exif.tobytes())


CASES = {
    "png-16-bit-grey": (lambda: _encode(Image.fromarray(GREY.astype(np.uint16) * 257), "PNG"), GREY3),
    "png-palette": (lambda: _encode(Image.fromarray(RGB).quantize(64), "PNG"), RGB),
    "png-grey-alpha": (lambda: _encode(Image.fromarray(GREY).convert("LA"), "PNG"), GREY3),
    "png-rgba": (lambda: _encode(Image.fromarray(RGB).convert("RGBA"), "PNG"), RGB),
    "jpeg-cmyk": (lambda: _encode(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=98), RGB),
    "jpeg-grey": (lambda: _encode(Image.fromarray(GREY), "JPEG", quality=98), GREY3),
    "jpeg-exif-rotated": (_exif_rotated, RGB),
    "gif": (lambda: _encode(Image.fromarray(RGB).quantize(64), "GIF"), RGB),
    "bmp": (lambda: _encode(Image.fromarray(RGB), "BMP"), RGB),
    "tiff-16-bit-grey": (lambda: _encode(Image.fromarray(GREY.astype(np.uint16) * 257), "TIFF"), GREY3),
}


@pytest.mark.parametrize("case", CASES)
def test_every_mode_decodes_to_the_picture_it_shows(case: str) -> None:
    make, expected = CASES[case]
    image = decode_rgb(make())
    assert image.dtype.is_floating_point is False and tuple(image.shape) == (3, SIZE, SIZE)
    got = image.permute(1, 2, 0).numpy().astype(float)
    correlation = np.corrcoef(got.ravel(), expected.astype(float).ravel())[0, 1]
    assert correlation > 0.98, f"{case}: correlation {correlation:.3f} with the picture"
    assert np.abs(got - expected).mean() < 12  # the same brightness, not only the same shape


def test_a_16_bit_dataset_is_stored_as_its_picture(tmp_path: Path) -> None:
    """Through the whole decode path (CSV -> cache bank), as the issue found it: not noise."""
    (tmp_path / "val").mkdir()
    Image.fromarray(GREY.astype(np.uint16) * 257).save(tmp_path / "val" / "a.png")
    (tmp_path / "val.csv").write_text("id,filename,label\n0,a.png,x\n")
    bank = load_bank(read_image_csv(tmp_path / "val.csv"), SIZE, False, tmp_path / "cache")
    assert np.array_equal(bank.images[0, 0].numpy(), GREY)


def test_an_unreadable_format_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "a.png").write_bytes(b"P6\n" + b"\x00" * 10)  # a truncated PPM header under .png
    (tmp_path / "val.csv").write_text("id,filename,label\n0,a.png,x\n")
    with pytest.raises(DataError, match=r"val\.csv: image .*a\.png is corrupt or not an image") as err:
        load_bank(read_image_csv(tmp_path / "val.csv"), SIZE, False, tmp_path / "cache")
    assert "\n" not in str(err.value)
