"""The decoded image cache: exact pixels, built once, memory-mapped, rebuilt when the data changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, read_file, write_jpeg, write_png

import fewshot.data.cache as cache_module
from fewshot.data.cache import ImageBank, load_bank
from fewshot.data.tables import read_image_csv
from fewshot.errors import DataError
from tests.conftest import write_split

SIZE = 16
CLASSES = ["n01", "n02", "n03"]


@pytest.fixture
def table(tmp_path):
    return read_image_csv(write_split(tmp_path / "data", "train", CLASSES, per_class=3, size=SIZE))


def _npy_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npy")) if folder.exists() else []


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of ``path`` in this process's memory map (Linux)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def test_bank_equals_torchvision_decode(table, tmp_path):
    bank = load_bank(table, SIZE, cache_dir=tmp_path / "cache")
    assert bank.images.shape == (len(table), 3, SIZE, SIZE)
    assert bank.images.dtype == torch.uint8
    for row, path in enumerate(table.paths):
        assert torch.equal(bank.images[row], decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
    assert bank.ids == table.ids
    assert bank.classes == tuple(CLASSES)
    assert bank.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(bank) == 9


def test_grayscale_and_png_images_are_decoded_as_rgb(tmp_path):
    folder = tmp_path / "data"
    (folder / "train").mkdir(parents=True)
    gray = torch.arange(SIZE * SIZE, dtype=torch.uint8).reshape(1, SIZE, SIZE)
    write_jpeg(gray, str(folder / "train" / "gray.jpg"), quality=100)
    colour = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    write_png(colour, str(folder / "train" / "colour.png"))
    (folder / "train.csv").write_text("id,filename,label\ng,gray.jpg,a\nc,colour.png,b\n")
    bank = load_bank(read_image_csv(folder / "train.csv"), SIZE, cache_dir=tmp_path / "cache")
    assert bank.images.shape == (2, 3, SIZE, SIZE)
    # The grey image has three equal channels; the PNG is lossless, so exactly the written pixels.
    assert torch.equal(bank.images[0, 0], bank.images[0, 1]) and torch.equal(bank.images[0, 0], bank.images[0, 2])
    assert torch.equal(bank.images[1], colour)


def test_second_load_reuses_and_memory_maps_the_cache(table, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = load_bank(table, SIZE, cache_dir=cache_dir)
    (path,) = _npy_files(cache_dir)
    assert path.name.startswith("bank-")
    stat = path.stat()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached bank was decoded again")

    monkeypatch.setattr(cache_module, "_decode", no_decoding)
    second = load_bank(table, SIZE, cache_dir=cache_dir)
    assert _npy_files(cache_dir) == [path]
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert path.stat().st_ino == stat.st_ino
    assert torch.equal(first.images, second.images)

    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc/self/maps to see memory maps")
    pointer = second.images.data_ptr()
    assert any(start <= pointer < end for start, end in _mapped_ranges(path.resolve()))


def test_cache_is_copy_on_write(table, tmp_path):
    cache_dir = tmp_path / "cache"
    bank = load_bank(table, SIZE, cache_dir=cache_dir)
    before = load_bank(table, SIZE, cache_dir=cache_dir).images.clone()
    bank.images[0].fill_(7)  # writable for torch, but must never reach the shared file
    del bank
    again = load_bank(table, SIZE, cache_dir=cache_dir)
    assert torch.equal(again.images, before)


def test_default_cache_dir_is_under_fewshot_cache(table, isolated_cache):
    bank = load_bank(table, SIZE)
    files = _npy_files(isolated_cache / "banks")
    assert files, "no bank written under $FEWSHOT_CACHE/banks"
    assert any(torch.equal(torch.from_numpy(np.load(f)), bank.images) for f in files)


def test_changed_image_bytes_give_a_new_key_and_a_rebuild(table, tmp_path):
    cache_dir = tmp_path / "cache"
    old = load_bank(table, SIZE, cache_dir=cache_dir)
    (old_path,) = _npy_files(cache_dir)
    new_image = torch.full((3, SIZE, SIZE), 200, dtype=torch.uint8)
    write_jpeg(new_image, str(table.paths[4]), quality=100)
    new = load_bank(table, SIZE, cache_dir=cache_dir)
    paths = _npy_files(cache_dir)
    assert len(paths) == 2 and old_path in paths
    assert torch.equal(new.images[4], decode_image(read_file(str(table.paths[4])), mode=ImageReadMode.RGB))
    assert not torch.equal(new.images[4], old.images[4])
    assert torch.equal(new.images[:4], old.images[:4]) and torch.equal(new.images[5:], old.images[5:])


def test_changed_label_gives_a_new_key(table, tmp_path):
    cache_dir = tmp_path / "cache"
    load_bank(table, SIZE, cache_dir=cache_dir)
    csv_path = table.source
    lines = csv_path.read_text().splitlines()
    lines[-1] = lines[-1].rsplit(",", 1)[0] + ",n99"
    csv_path.write_text("\n".join(lines) + "\n")
    relabelled = load_bank(read_image_csv(csv_path), SIZE, cache_dir=cache_dir)
    assert len(_npy_files(cache_dir)) == 2
    assert relabelled.classes == (*CLASSES, "n99")
    assert relabelled.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3]


def test_changed_size_or_resize_flag_gives_a_new_key(table, tmp_path):
    cache_dir = tmp_path / "cache"
    load_bank(table, SIZE, cache_dir=cache_dir)
    load_bank(table, SIZE, resize=True, cache_dir=cache_dir)
    load_bank(table, 8, resize=True, cache_dir=cache_dir)
    assert len(_npy_files(cache_dir)) == 3


def _assert_nothing_left(cache_dir: Path) -> None:
    left = [p.name for p in cache_dir.iterdir()] if cache_dir.exists() else []
    assert not [name for name in left if name.endswith(".npy") or "tmp" in name], left


def test_corrupt_image(table, tmp_path):
    bad = table.paths[5]
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    cache_dir = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_bank(table, SIZE, cache_dir=cache_dir)
    assert str(bad) in str(err.value)
    assert "corrupt" in str(err.value)
    _assert_nothing_left(cache_dir)


def test_empty_image_file(table, tmp_path):
    table.paths[0].write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_bank(table, SIZE, cache_dir=tmp_path / "cache")
    assert str(table.paths[0]) in str(err.value)
    _assert_nothing_left(tmp_path / "cache")


def test_unreadable_image(table, tmp_path):
    table.paths[2].unlink()
    with pytest.raises(DataError) as err:
        load_bank(table, SIZE, cache_dir=tmp_path / "cache")
    assert str(table.paths[2]) in str(err.value)
    _assert_nothing_left(tmp_path / "cache")


def test_wrong_image_size(table, tmp_path):
    odd = table.paths[7]
    write_jpeg(torch.zeros(3, 12, 20, dtype=torch.uint8), str(odd))  # 20 wide, 12 high
    cache_dir = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_bank(table, SIZE, cache_dir=cache_dir)
    message = str(err.value)
    assert str(odd) in message
    assert "20x12" in message
    assert f"{SIZE}x{SIZE}" in message
    _assert_nothing_left(cache_dir)


def test_resize_true_resizes_instead(table, tmp_path):
    odd = table.paths[7]
    write_jpeg(torch.full((3, 12, 20), 90, dtype=torch.uint8), str(odd), quality=100)
    bank = load_bank(table, SIZE, resize=True, cache_dir=tmp_path / "cache")
    assert bank.images.shape == (9, 3, SIZE, SIZE)
    assert (bank.images[7].int() - 90).abs().max() <= 2  # a flat image stays flat when resized
    # Images of the right size are untouched.
    for row in (0, 8):
        expected = decode_image(read_file(str(table.paths[row])), mode=ImageReadMode.RGB)
        assert torch.equal(bank.images[row], expected)


def test_resize_to_another_size(table, tmp_path):
    bank = load_bank(table, 8, resize=True, cache_dir=tmp_path / "cache")
    assert bank.images.shape == (9, 3, 8, 8)


def test_failed_build_leaves_no_partial_file(table, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    real_decode = cache_module._decode
    calls = []

    def crash_midway(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # not even an Exception: the temp file must still go
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_decode", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        load_bank(table, SIZE, cache_dir=cache_dir)
    assert cache_dir.is_dir()
    assert list(cache_dir.iterdir()) == []
    monkeypatch.setattr(cache_module, "_decode", real_decode)
    bank = load_bank(table, SIZE, cache_dir=cache_dir)  # and the next run builds it whole
    assert torch.equal(bank.images[8], decode_image(read_file(str(table.paths[8])), mode=ImageReadMode.RGB))


def test_rows_of(table, tmp_path):
    bank = load_bank(table, SIZE, cache_dir=tmp_path / "cache")
    rows = bank.rows_of(["8", "0", "4", "0"], "somewhere")
    assert rows.tolist() == [8, 0, 4, 0]
    assert rows.dtype == torch.long
    with pytest.raises(DataError) as err:
        bank.rows_of(["1", "no-such-id", "2"], "val_testcase.csv, line 3")
    assert "'no-such-id'" in str(err.value)
    assert "val_testcase.csv, line 3" in str(err.value)


def test_bank_to_device_keeps_everything_but_the_device(table, tmp_path):
    bank = load_bank(table, SIZE, cache_dir=tmp_path / "cache")
    moved = bank.to("cpu")
    assert isinstance(moved, ImageBank)
    assert torch.equal(moved.images, bank.images)
    assert moved.ids == bank.ids and moved.classes == bank.classes
    assert torch.equal(moved.labels, bank.labels)
    assert moved.rows_of(["3"], "x").tolist() == [3]


def test_cache_dir_holds_one_complete_file(table, tmp_path):
    load_bank(table, SIZE, cache_dir=tmp_path / "cache")
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(names) == 1 and names[0].startswith("bank-") and "tmp" not in names[0]
    assert os.path.getsize(tmp_path / "cache" / names[0]) >= 9 * 3 * SIZE * SIZE
