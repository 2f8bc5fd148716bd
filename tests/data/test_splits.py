"""From a DataConfig to decoded splits and the fixed episodes that select and report, every mistake caught up
front; selection never sees the episodes a score is reported on."""

from __future__ import annotations

import pytest
import torch

import fewshot.data.cache as cache_module
from fewshot.config.schema import DataConfig, EpisodeSpec
from fewshot.data.predictions import read_predictions
from fewshot.data.splits import load_fewshot_data
from fewshot.data.tables import open_split
from fewshot.data.testcase import generate_testcase, truth_path, write_fixed_episodes, write_testcase
from fewshot.errors import DataError

SIZE = 16
TRAIN = EpisodeSpec(way=5, shot=1, query=3)
EVAL = EpisodeSpec(way=5, shot=1, query=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of this test's own, so generated episode files from other tests are never reused."""
    path = tmp_path / "fewshot-cache"
    monkeypatch.setenv("FEWSHOT_CACHE", str(path))
    return path


@pytest.fixture
def root(course_data):
    return course_data(train_classes=6, val_classes=5, per_class=6, size=SIZE)


def _config(root, cache, **kwargs) -> DataConfig:
    return DataConfig(root=root, n_val_episodes=20, image_size=SIZE, cache_dir=cache / "banks", **kwargs)


def _forbid_decoding(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(cache_module, "_decode", no_decoding)


def _query_ids(fixed) -> set[str]:
    return {fixed.bank.ids[i] for episode in fixed.episodes for i in episode.query.tolist()}


def _image_ids(fixed) -> set[str]:
    return _query_ids(fixed) | {fixed.bank.ids[i] for e in fixed.episodes for i in e.support.tolist()}


def test_generates_fixed_episodes_in_the_cache(root, cache, monkeypatch):
    config = _config(root, cache)
    data = load_fewshot_data(config, TRAIN, EVAL)
    report = data.report
    assert data.root == root.resolve()
    assert report.path.parent == cache / "episodes"
    assert report.path.is_file() and truth_path(report.path).is_file()
    assert report.testcase.spec == EVAL and report.split == "val"
    assert len(report.episodes) == len(report.testcase.episode_ids) == 20
    # Decoded splits, the right sizes.
    assert data.train.images.shape == (36, 3, SIZE, SIZE) and len(data.train.classes) == 6
    assert report.bank.images.shape == (30, 3, SIZE, SIZE) and len(report.bank.classes) == 5
    assert len(list((cache / "banks").glob("bank-*.npy"))) == 2
    # Every episode has answers, and they agree with the val labels.
    _, truth = read_predictions(truth_path(report.path))
    for row, episode in enumerate(report.episodes):
        assert episode.query_labels.tolist() == truth[row].tolist()
        support_classes = report.bank.labels[episode.support]
        assert len(set(support_classes.tolist())) == EVAL.way
        assert torch.equal(report.bank.labels[episode.query], support_classes[episode.query_labels])

    # A second call reuses the same files and the same decoded banks.
    mtime = report.path.stat().st_mtime_ns
    _forbid_decoding(monkeypatch)
    again = load_fewshot_data(config, TRAIN, EVAL)
    assert again.report.path == report.path and again.select.path == data.select.path
    assert again.report.path.stat().st_mtime_ns == mtime
    assert [e.query.tolist() for e in again.report.episodes] == [e.query.tolist() for e in report.episodes]
    assert sorted(p.name for p in (cache / "episodes").iterdir()) == sorted(
        f.name for f in (report.path, truth_path(report.path), data.select.path, truth_path(data.select.path))
    )


def test_with_a_test_split_selection_is_on_val_and_the_score_on_test(course_data, cache):
    root = course_data(train_classes=6, val_classes=5, per_class=6, size=SIZE, test_classes=5)
    data = load_fewshot_data(_config(root, cache), TRAIN, EVAL, n_select=7)
    assert data.protocol.name == "test-split"
    assert (data.select.split, data.report.split) == ("val", "test")
    assert len(data.select.episodes) == 7 and len(data.report.episodes) == 20
    test, val = open_split(root, "test"), open_split(root, "val")
    assert data.report.bank.classes == test.classes and data.select.bank.classes == val.classes
    assert data.report.bank.ids == test.ids and not set(test.classes) & set(val.classes)
    assert "7 val episodes" in data.protocol.describe() and "20 test episodes" in data.protocol.describe()
    # data.test_split: null keeps the course's protocol (score on val), the test split unread.
    val_only = load_fewshot_data(_config(root, cache, test_split=None), TRAIN, EVAL)
    assert val_only.report.split == "val" and val_only.protocol.name.startswith("val-")


def test_without_a_test_split_selection_has_episodes_of_its_own(root, cache):
    data = load_fewshot_data(_config(root, cache), TRAIN, EVAL)
    # 20 episodes of all 5 classes with 2 queries each leave no image of a class unused as a query: the
    # selection episodes share images with the reported ones, but are other episodes, and say so.
    assert data.protocol.name == "val-reseeded" and "of the same images" in data.protocol.select
    selected = [(e.support.tolist(), e.query.tolist()) for e in data.select.episodes]
    reported = [(e.support.tolist(), e.query.tolist()) for e in data.report.episodes]
    assert len(selected) == 20 and not set(map(str, selected)) & set(map(str, reported))


def test_selection_queries_avoid_reported_queries_when_they_can(root, cache):
    beside = root / "mini" / "val_testcase.csv"
    testcase, truth = generate_testcase(open_split(root, "val"), EVAL, n_episodes=1, seed=5)
    write_fixed_episodes(beside, testcase, truth)  # one reported episode: 2 queries of each class
    data = load_fewshot_data(_config(root, cache), TRAIN, EVAL)
    assert data.protocol.name == "val-disjoint" and data.report.path == beside
    assert len(data.select.episodes) == 20
    assert not _image_ids(data.select) & _query_ids(data.report)


def test_test_episodes_without_a_test_split(root, cache, tmp_path):
    with pytest.raises(DataError, match=r"data\.test_episodes is .* has no 'test' split"):
        load_fewshot_data(_config(root, cache, test_episodes=tmp_path / "t.csv"), TRAIN, EVAL)


def test_another_eval_shape_gets_other_episodes_another_training_shape_the_same(root, cache):
    config = _config(root, cache)
    first = load_fewshot_data(config, TRAIN, EVAL).report.path
    other_spec = load_fewshot_data(config, TRAIN, EpisodeSpec(way=3, shot=2, query=1)).report
    other_training = load_fewshot_data(config, EpisodeSpec(way=2, shot=1, query=1), EVAL).report.path
    assert first != other_spec.path and first == other_training
    assert other_spec.testcase.spec == EpisodeSpec(way=3, shot=2, query=1)


def test_uses_the_course_testcase_beside_val_csv(root, cache):
    val_table = open_split(root, "val")
    beside = root / "mini" / "val_testcase.csv"
    testcase, truth = generate_testcase(val_table, EVAL, n_episodes=7, seed=99)
    write_fixed_episodes(beside, testcase, truth)
    report = load_fewshot_data(_config(root, cache), TRAIN, EVAL).report
    assert report.path == beside
    assert len(report.episodes) == 7  # the course's file, not n_val_episodes generated ones
    assert report.testcase.episode_ids == testcase.episode_ids
    for row, episode in enumerate(report.episodes):
        assert [report.bank.ids[i] for i in episode.query.tolist()] == list(testcase.query_ids[row])
        assert episode.query_labels.tolist() == truth[row].tolist()
    assert all(p.name.startswith("val-select") for p in (cache / "episodes").iterdir())  # selection's only


def test_course_testcase_of_another_shape_is_not_used(root, cache):
    val_table = open_split(root, "val")
    beside = root / "mini" / "val_testcase.csv"
    testcase, truth = generate_testcase(val_table, EpisodeSpec(way=5, shot=1, query=1), n_episodes=3, seed=0)
    write_fixed_episodes(beside, testcase, truth)
    report = load_fewshot_data(_config(root, cache), TRAIN, EVAL).report
    assert report.path.parent == cache / "episodes"
    assert report.testcase.spec == EVAL and len(report.episodes) == 20


def test_course_testcase_without_answers(root, cache):
    testcase, _ = generate_testcase(open_split(root, "val"), EVAL, n_episodes=2, seed=0)
    write_testcase(root / "mini" / "val_testcase.csv", testcase)
    with pytest.raises(DataError, match="need answers") as err:
        load_fewshot_data(_config(root, cache), TRAIN, EVAL)
    assert "val_testcase.csv" in str(err.value)


def test_explicit_val_episodes(root, cache, tmp_path):
    path = tmp_path / "mine" / "episodes.csv"
    testcase, truth = generate_testcase(
        open_split(root, "val"), EpisodeSpec(way=5, shot=1, query=1), n_episodes=4, seed=3
    )
    write_fixed_episodes(path, testcase, truth)
    report = load_fewshot_data(_config(root, cache, val_episodes=path), TRAIN, EVAL).report
    assert report.path == path
    assert len(report.episodes) == 4


def test_train_way_larger_than_classes_fails_before_decoding(root, cache, monkeypatch):
    _forbid_decoding(monkeypatch)
    with pytest.raises(DataError, match="need 7 classes, but the data has only 6"):
        load_fewshot_data(_config(root, cache), EpisodeSpec(way=7, shot=1, query=1), EVAL)
    assert not (cache / "banks").exists()
    assert not (cache / "episodes").exists()


def test_eval_way_larger_than_val_classes_fails_before_decoding(root, cache, monkeypatch):
    _forbid_decoding(monkeypatch)
    with pytest.raises(DataError, match=r"val\.csv \(val split\): .* need 6 classes, but the data has only 5"):
        load_fewshot_data(_config(root, cache), TRAIN, EpisodeSpec(way=6, shot=1, query=1))
    assert not (cache / "banks").exists()


def test_too_few_images_per_class_fails_before_decoding(root, cache, monkeypatch):
    _forbid_decoding(monkeypatch)
    with pytest.raises(DataError, match=r"train\.csv \(train split\): .* class 'n00000000' has only 6"):
        load_fewshot_data(_config(root, cache), EpisodeSpec(way=5, shot=2, query=5), EVAL)
    assert not (cache / "banks").exists()


def test_missing_root_or_split(tmp_path, cache):
    with pytest.raises(DataError, match="does not exist"):
        load_fewshot_data(_config(tmp_path / "nowhere", cache), TRAIN, EVAL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no 'train' split"):
        load_fewshot_data(_config(tmp_path / "empty", cache), TRAIN, EVAL)


def test_fall_2020_layout(course_data, cache):
    root = course_data(style="2020", train_classes=5, val_classes=5, per_class=4, size=SIZE)
    data = load_fewshot_data(
        _config(root, cache), EpisodeSpec(way=5, shot=1, query=1), EpisodeSpec(way=5, shot=1, query=3)
    )
    assert len(data.train) == len(data.report.bank) == 20
    assert len(data.report.episodes) == 20
