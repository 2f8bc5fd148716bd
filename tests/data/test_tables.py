"""Image tables: the layouts users bring are found and read, and every mistake names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg

from fewshot.data.tables import OFFICE_DIRS, open_split, read_image_csv, read_image_folder
from fewshot.errors import DataError
from tests.conftest import write_split

SIZE = 8


def _csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _jpeg(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(torch.full((3, SIZE, SIZE), value, dtype=torch.uint8), str(path))
    return path


@pytest.mark.parametrize("style", ["mini", "2020"])
def test_open_split_finds_both_course_styles(course_data, style):
    root = course_data(style=style, train_classes=3, val_classes=2, per_class=2, size=SIZE)
    expected_dir = root / "mini" if style == "mini" else root
    for split, n_classes in (("train", 3), ("val", 2)):
        # From hw4_data/ and from the folder above it (the course archive unpacked in place).
        for start in (root, root.parent):
            table = open_split(start, split)
            assert table.source == expected_dir / f"{split}.csv"
            assert len(table) == 2 * n_classes
            assert len(table.classes) == n_classes
            assert all(p.parent == expected_dir / split and p.is_file() for p in table.paths)
            assert table.ids == tuple(str(i) for i in range(2 * n_classes))


def test_rows_keep_csv_order_and_labels(tmp_path):
    write_split(tmp_path, "train", ["n02", "n01"], per_class=2, size=SIZE)
    table = read_image_csv(tmp_path / "train.csv")
    assert table.labels == ("n02", "n02", "n01", "n01")
    assert table.paths == tuple(tmp_path / "train" / f"{c}_{k:03d}.jpg" for c in ("n02", "n01") for k in range(2))
    # Classes in order of first appearance, not sorted; indices point into them.
    assert table.classes == ("n02", "n01")
    assert table.label_indices().tolist() == [0, 0, 1, 1]
    assert table.label_indices().dtype == torch.long


def test_csv_path_itself_is_a_root(tmp_path):
    csv_path = write_split(tmp_path / "somewhere", "train", ["a", "b"], per_class=1, size=SIZE)
    assert open_split(csv_path, "ignored").source == csv_path


def test_office_home_layout(tmp_path):
    for split, per_class in (("train", 3), ("val", 1)):
        write_split(tmp_path / "office", split, ["Alarm_Clock", "Backpack", "Bike"], per_class, size=SIZE)
    train = open_split(tmp_path, "train", OFFICE_DIRS)
    val = open_split(tmp_path, "val", OFFICE_DIRS)
    assert train.source == tmp_path / "office" / "train.csv"
    assert val.source == tmp_path / "office" / "val.csv"
    assert (len(train), len(val)) == (9, 3)
    assert train.classes == val.classes == ("Alarm_Clock", "Backpack", "Bike")


def test_image_folder_tree(tmp_path):
    for label, count in (("cat", 2), ("dog", 3)):
        for k in range(count):
            _jpeg(tmp_path / "data" / "train" / label / f"{k}.jpg")
    (tmp_path / "data" / "train" / "dog" / "notes.txt").write_text("not an image")
    table = open_split(tmp_path / "data", "train")
    assert len(table) == 5
    assert table.classes == ("cat", "dog")
    assert table.labels == ("cat", "cat", "dog", "dog", "dog")
    assert all(Path(i).parent.name == label for i, label in zip(table.ids, table.labels, strict=True))
    assert all(p.is_file() and p.suffix == ".jpg" for p in table.paths)
    assert read_image_folder(tmp_path / "data" / "train") == table


def test_image_folder_that_is_not_one(tmp_path):
    with pytest.raises(DataError, match="not an image folder tree"):
        read_image_folder(tmp_path / "missing")


def test_extra_columns_and_column_order_are_tolerated(tmp_path):
    _jpeg(tmp_path / "train" / "a.jpg")
    _jpeg(tmp_path / "train" / "b.jpg")
    csv_path = _csv(tmp_path / "train.csv", "label,width,filename,id,note\nx,84,a.jpg,7,hi\ny,84,b.jpg,9,\n")
    table = read_image_csv(csv_path)
    assert table.ids == ("7", "9")
    assert table.labels == ("x", "y")
    assert table.paths == (tmp_path / "train" / "a.jpg", tmp_path / "train" / "b.jpg")


def test_ids_are_strings_kept_verbatim(tmp_path):
    _jpeg(tmp_path / "train" / "a.jpg")
    _jpeg(tmp_path / "train" / "b.jpg")
    table = read_image_csv(_csv(tmp_path / "train.csv", "id,filename,label\n007,a.jpg,NA\n1e3,b.jpg,n01\n"))
    assert table.ids == ("007", "1e3")
    assert table.labels == ("NA", "n01")


def test_missing_columns(tmp_path):
    csv_path = _csv(tmp_path / "train.csv", "id,file,class\n0,a.jpg,x\n")
    with pytest.raises(DataError) as err:
        read_image_csv(csv_path)
    message = str(err.value)
    assert str(csv_path) in message
    assert "filename" in message and "label" in message


def test_missing_image_file(tmp_path):
    _jpeg(tmp_path / "train" / "a.jpg")
    csv_path = _csv(tmp_path / "train.csv", "id,filename,label\n0,a.jpg,x\n1,gone.jpg,x\n2,also_gone.jpg,y\n")
    with pytest.raises(DataError) as err:
        read_image_csv(csv_path)
    message = str(err.value)
    assert str(csv_path) in message
    assert "line 3" in message
    assert str(tmp_path / "train" / "gone.jpg") in message
    assert "1 more" in message


def test_missing_image_folder(tmp_path):
    csv_path = _csv(tmp_path / "train.csv", "id,filename,label\n0,a.jpg,x\n")
    with pytest.raises(DataError, match=r"image folder .* does not exist") as err:
        read_image_csv(csv_path)
    assert str(csv_path) in str(err.value)


@pytest.mark.parametrize("row", ["2,,x", "2,c.jpg,", ",c.jpg,x", "2,  ,x"])
def test_empty_cell(tmp_path, row):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpeg(tmp_path / "train" / name)
    csv_path = _csv(tmp_path / "train.csv", f"id,filename,label\n0,a.jpg,x\n1,b.jpg,x\n{row}\n")
    with pytest.raises(DataError) as err:
        read_image_csv(csv_path)
    assert str(csv_path) in str(err.value)
    assert "line 4" in str(err.value)


def test_duplicate_id(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpeg(tmp_path / "train" / name)
    csv_path = _csv(tmp_path / "train.csv", "id,filename,label\n5,a.jpg,x\n17,b.jpg,x\n17,c.jpg,y\n")
    with pytest.raises(DataError) as err:
        read_image_csv(csv_path)
    assert str(err.value) == f"{csv_path}: id '17' is on line 3 and again on line 4"


def test_a_byte_that_is_not_utf8_is_named_with_its_line(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(b"id,filename,label\n0,a.jpg,cat\n1,b.jpg,d\xe9g\n")
    with pytest.raises(DataError) as err:
        read_image_csv(csv_path)
    assert str(err.value) == f"{csv_path}: line 3: byte 0xe9 is not UTF-8 (save the file as UTF-8)"
    csv_path.write_bytes(b"\xff\xfe\x00\x01\x80\x81binary\x00\xc3\x28")
    with pytest.raises(DataError, match="line 1: byte 0xff is not UTF-8"):
        read_image_csv(csv_path)


def test_a_label_with_spaces_around_it_is_refused_not_made_a_class(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _jpeg(tmp_path / "train" / name)
    csv_path = _csv(tmp_path / "train.csv", "id,filename,label\n0,a.jpg,boot\n1,b.jpg,boot \n")
    with pytest.raises(DataError) as err:
        read_image_csv(csv_path)
    assert str(err.value) == f"{csv_path}: line 3: label 'boot ' has spaces around it (remove them)"


def test_no_such_split(course_data):
    root = course_data(train_classes=2, val_classes=2, per_class=1, size=SIZE)
    with pytest.raises(DataError) as err:
        open_split(root, "test")
    message = str(err.value)
    assert "'test'" in message
    assert str(root / "mini" / "test.csv") in message


def test_no_such_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        open_split(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(err.value)


@pytest.mark.parametrize(
    "content",
    [
        b"",  # empty file
        b'id,filename,label\n0,a.jpg,x\n1,"b.jpg,x\n',  # unterminated quote
        b"id,filename,label\n0,a.jpg,x\n1,b.jpg,x,extra,fields\n",  # ragged rows
    ],
)
def test_unreadable_csv(tmp_path, content):
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(content)
    with pytest.raises(DataError, match="not a readable CSV") as err:
        read_image_csv(csv_path)
    assert str(csv_path) in str(err.value)
