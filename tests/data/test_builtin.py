"""The built-in synthetic dataset: course layout, determinism, colour-blindness, atomic reuse."""

from __future__ import annotations

import csv
import multiprocessing
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from fewshot.data import builtin
from fewshot.data.builtin import BuiltinSpec, builtin_root, ensure_builtin
from fewshot.errors import ConfigError, DataError

SMALL = BuiltinSpec(
    seed=3,
    image_size=32,
    train_classes=10,
    val_classes=5,
    test_classes=5,
    images_per_class=20,
    office_classes=6,
    office_train_per_class=4,
    office_val_per_class=2,
    office_image_size=40,
)
SPLITS = ("mini/train", "mini/val", "mini/test", "office/train", "office/val")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_builtin(SMALL, root=tmp_path_factory.mktemp("builtin") / "small")


def _rows(root: Path, split: str) -> list[dict[str, str]]:
    with open(root / f"{split}.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["id", "filename", "label"]
        return list(reader)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("split", SPLITS)
def test_csv_columns_ids_and_files(small_root: Path, split: str) -> None:
    rows = _rows(small_root, split)
    assert [int(r["id"]) for r in rows] == list(range(len(rows)))
    for row in rows:
        assert "/" not in row["filename"]
        assert (small_root / split / row["filename"]).is_file()
    on_disk = {p.name for p in (small_root / split).iterdir()}
    assert on_disk == {r["filename"] for r in rows}


def test_split_sizes_and_class_sets(small_root: Path) -> None:
    labels = {split: [r["label"] for r in _rows(small_root, split)] for split in SPLITS}
    mini = {s: set(labels[f"mini/{s}"]) for s in ("train", "val", "test")}
    assert [len(mini[s]) for s in ("train", "val", "test")] == [10, 5, 5]
    assert not (mini["train"] & mini["val"] or mini["train"] & mini["test"] or mini["val"] & mini["test"])
    assert len(labels["mini/train"]) == 10 * 20
    office_train, office_val = set(labels["office/train"]), set(labels["office/val"])
    assert office_train == office_val and len(office_train) == 6
    assert (len(labels["office/train"]), len(labels["office/val"])) == (6 * 4, 6 * 2)
    assert not office_train & mini["train"]


@pytest.mark.parametrize(("split", "size"), [("mini/val", 32), ("office/train", 40)])
def test_images_decode_to_spec_size_rgb(small_root: Path, split: str, size: int) -> None:
    for row in _rows(small_root, split)[:10]:
        data = read_file(str(small_root / split / row["filename"]))
        image = decode_image(data, mode=ImageReadMode.UNCHANGED)
        assert image.shape == (3, size, size)
        assert image.dtype == torch.uint8
        # Not blank: there is an object on a background.
        assert image.float().std() > 5


def test_same_spec_is_byte_identical_and_seed_matters(small_root: Path, tmp_path: Path) -> None:
    again = ensure_builtin(SMALL, root=tmp_path / "again")
    assert _tree(again) == _tree(small_root)
    other = replace(SMALL, seed=SMALL.seed + 1)
    reseeded = _tree(ensure_builtin(other, root=tmp_path / "other"))
    original = _tree(small_root)
    images = [name for name in original if name.endswith(".jpg")]
    assert reseeded.keys() == original.keys()
    assert sum(reseeded[name] != original[name] for name in images) == len(images)


def _nearest_mean_colour_accuracy(root: Path, split: str, episodes: int, seed: int = 0) -> float:
    """5-way 1-shot 15-query: image -> mean RGB, prototype = the support image, nearest prototype wins."""
    rows = _rows(root, split)
    colours = torch.stack(
        [decode_image(read_file(str(root / split / r["filename"]))).float().mean((1, 2)) for r in rows]
    )
    classes = sorted({r["label"] for r in rows})
    members = [torch.tensor([i for i, r in enumerate(rows) if r["label"] == c]) for c in classes]
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for _ in range(episodes):
        chosen = torch.randperm(len(classes), generator=gen)[:5]
        picks = [members[c][torch.randperm(len(members[c]), generator=gen)[:16]] for c in chosen]
        prototypes = colours[torch.stack([p[0] for p in picks])]
        queries = colours[torch.cat([p[1:] for p in picks])]
        predicted = torch.cdist(queries, prototypes).argmin(1)
        correct += int((predicted == torch.arange(5).repeat_interleave(15)).sum())
    return correct / (episodes * 75)


def test_classes_are_not_separable_by_mean_colour(tmp_path: Path) -> None:
    # Default class counts: a handful of small classes would make the estimate noisy.
    spec = BuiltinSpec(
        seed=1,
        image_size=32,
        train_classes=1,
        test_classes=1,
        images_per_class=30,
        office_classes=1,
        office_train_per_class=1,
        office_val_per_class=1,
    )
    root = ensure_builtin(spec, root=tmp_path / "colour")
    accuracy = _nearest_mean_colour_accuracy(root, "mini/val", episodes=300)
    assert accuracy < 0.30, f"nearest-mean-colour accuracy {accuracy:.3f} is far above chance (0.20)"


def test_colours_are_palette_pairs_drawn_uniformly_and_both_domains_share_the_palette() -> None:
    from fewshot.data.builtin import _PALETTE_PAIRS, _generator, _palette, _sample_colours

    palette = _palette(seed=3)
    assert palette[0].shape == palette[1].shape == (_PALETTE_PAIRS, 3)
    assert torch.equal(palette[0], _palette(seed=3)[0]) and not torch.equal(palette[1], _palette(seed=4)[1])
    fg, bg = _sample_colours(_generator(3, "office", 7), 3200, palette)
    pairs = torch.cat([fg, bg], dim=1)
    index = (pairs[:, None] == torch.cat(palette, dim=1)[None]).all(-1)
    assert index.any(1).all(), "an image got a colour pair outside the palette"
    counts = index.float().argmax(1).bincount(minlength=_PALETTE_PAIRS)
    assert counts.min() > 0.6 * 200 and counts.max() < 1.4 * 200, counts


def test_second_call_reuses_the_dataset(small_root: Path) -> None:
    csv_path = small_root / "mini" / "train.csv"
    before = (csv_path.stat().st_mtime_ns, sorted(p.name for p in small_root.parent.iterdir()))
    assert ensure_builtin(SMALL, root=small_root) == small_root
    assert (csv_path.stat().st_mtime_ns, sorted(p.name for p in small_root.parent.iterdir())) == before


def test_leftover_temporary_folder_does_not_break_generation(tmp_path: Path) -> None:
    root = tmp_path / "data"
    fresh = tmp_path / f".{root.name}.tmp-crashed-now"
    stale = tmp_path / f".{root.name}.tmp-crashed-long-ago"
    for leftover in (fresh, stale):
        (leftover / "mini" / "train").mkdir(parents=True)
        (leftover / "mini" / "train.csv").write_text("id,filename,label\n0,half.jpg,x\n")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert ensure_builtin(SMALL, root=root) == root
    assert len(_rows(root, "mini/train")) == 10 * 20
    assert fresh.exists(), "a recent build folder may belong to a live builder and must be left alone"
    assert not stale.exists(), "a build folder older than an hour is a crash leftover and is removed"


def test_foreign_folder_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a built-in dataset"):
        ensure_builtin(SMALL, root=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_folder_of_another_spec_is_refused(small_root: Path) -> None:
    with pytest.raises(DataError, match="another spec"):
        ensure_builtin(replace(SMALL, seed=99), root=small_root)


def test_builtin_root_is_in_cache_and_keyed_by_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    default = builtin_root()
    assert default.parent == tmp_path.resolve()
    assert default.name.startswith("builtin-v1-")
    assert builtin_root(BuiltinSpec()) == default
    assert builtin_root(BuiltinSpec(seed=1)) != default


def test_default_root_generates_under_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    root = ensure_builtin(SMALL)
    assert torch.get_num_threads() == threads, "rendering must restore the caller's thread count"
    assert root == builtin_root(SMALL)
    assert (root / "office" / "val.csv").is_file()
    assert not list(tmp_path.glob(".*.tmp-*")), "the temporary build folder was renamed away"


@pytest.mark.parametrize("field", ["image_size", "train_classes", "images_per_class"])
def test_invalid_spec_is_rejected(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        BuiltinSpec(**{field: 0})


def _build_in_process(root: str) -> str:
    return str(ensure_builtin(SMALL, root=Path(root)))


def test_concurrent_callers_all_get_one_complete_dataset(small_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "shared"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_build_in_process, [str(root)] * 3)
    assert results == [str(root)] * 3
    assert _tree(root) == _tree(small_root)
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_losing_the_rename_race_keeps_the_winner(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "raced"
    real_generate = builtin._generate

    def generate_while_another_node_finishes(spec: BuiltinSpec, out: Path) -> None:
        real_generate(spec, out)
        shutil.copytree(small_root, root)  # a builder the file lock could not see wins meanwhile
        (root / "winner").write_text("")

    monkeypatch.setattr(builtin, "_generate", generate_while_another_node_finishes)
    assert ensure_builtin(SMALL, root=root) == root
    assert (root / "winner").exists()
    assert not list(tmp_path.glob(".*.tmp-*")), "the losing build was discarded"


def test_val_testcase_is_written_in_course_format(small_root: Path) -> None:
    from fewshot.data.cache import load_bank
    from fewshot.data.tables import read_image_csv
    from fewshot.data.testcase import load_fixed_episodes

    bank = load_bank(read_image_csv(small_root / "mini" / "val.csv"), 32)
    testcase, episodes = load_fixed_episodes(small_root / "mini" / "val_testcase.csv", bank, way=5, shot=1)
    assert len(episodes) == 600 and testcase.query_ids.shape == (600, 75)
    header = (small_root / "mini" / "val_testcase.csv").read_text().splitlines()[0].split(",")
    assert len(header) == 1 + 5 + 75 and header[0] == "episode_id"
    first = episodes[0]  # the answers name the class of each query's support image
    assert (bank.labels[first.support][first.query_labels] == bank.labels[first.query]).all()
