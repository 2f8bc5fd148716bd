"""Testcase CSVs: the course format read by position, fixed episodes generated reproducibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot.config.schema import EpisodeSpec
from fewshot.data.cache import ImageBank
from fewshot.data.predictions import read_predictions, write_predictions
from fewshot.data.tables import ImageTable
from fewshot.data.testcase import Testcase as CaseFile  # aliased: pytest would collect a class named Test*
from fewshot.data.testcase import (
    generate_testcase,
    load_fixed_episodes,
    read_testcase,
    resolve_episodes,
    truth_path,
    write_fixed_episodes,
    write_testcase,
)
from fewshot.errors import DataError

N_CLASSES, PER_CLASS = 6, 8


def _table() -> ImageTable:
    """Ids that are not row numbers, classes interleaved, so a mix-up of rows, ids or labels shows."""
    rows = [(f"img{c}-{k}", f"n{c:02d}") for k in range(PER_CLASS) for c in range(N_CLASSES)]
    ids = tuple(i for i, _ in rows)
    return ImageTable(
        Path("/nowhere/val.csv"), ids, tuple(Path(f"/nowhere/{i}.jpg") for i in ids), tuple(label for _, label in rows)
    )


def _bank(table: ImageTable) -> ImageBank:
    images = torch.zeros(len(table), 3, 2, 2, dtype=torch.uint8)
    return ImageBank(images, table.label_indices(), table.classes, table.ids)


def _small_testcase() -> CaseFile:
    """Two 2-way 1-shot 2-query episodes written by hand."""
    return CaseFile(
        EpisodeSpec(way=2, shot=1, query=2),
        ("0", "1"),
        np.array([["img0-0", "img1-0"], ["img3-1", "img2-1"]], dtype=object),
        np.array([["img1-1", "img0-2", "img0-1", "img1-2"], ["img2-2", "img3-2", "img3-3", "img2-3"]], dtype=object),
    )


def _assert_same(a: CaseFile, b: CaseFile) -> None:
    assert a.spec == b.spec
    assert a.episode_ids == b.episode_ids
    assert np.array_equal(a.support_ids, b.support_ids)
    assert np.array_equal(a.query_ids, b.query_ids)


def test_write_read_round_trip(tmp_path):
    testcase = _small_testcase()
    path = tmp_path / "val_testcase.csv"
    write_testcase(path, testcase)
    lines = path.read_text().splitlines()
    assert lines[0].split(",")[0] == "episode_id"
    assert lines[1] == "0,img0-0,img1-0,img1-1,img0-2,img0-1,img1-2"
    _assert_same(read_testcase(path, 2, 1), testcase)
    assert [p.name for p in tmp_path.iterdir()] == ["val_testcase.csv"]  # no temp file left


def test_ids_are_read_as_strings_verbatim(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("episode_id,a,b,c,d\n007,01,2.0,NA,1e3\n")
    testcase = read_testcase(path, 2, 1)
    assert testcase.episode_ids == ("007",)
    assert testcase.support_ids.tolist() == [["01", "2.0"]]
    assert testcase.query_ids.tolist() == [["NA", "1e3"]]
    assert testcase.spec == EpisodeSpec(way=2, shot=1, query=1)


def test_read_by_position_not_by_name(tmp_path):
    path = tmp_path / "val_testcase.csv"
    write_testcase(path, _small_testcase())
    lines = path.read_text().splitlines()
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("\n".join(["ep,query0,query1,s0,s1,x,x.1", *lines[1:]]) + "\n")
    _assert_same(read_testcase(renamed, 2, 1), read_testcase(path, 2, 1))


def test_query_count_is_inferred(tmp_path):
    path = tmp_path / "t.csv"
    # 5-way 1-shot 15-query, the course's shape: 1 + 5 + 75 columns.
    header = ",".join(["episode_id"] + [f"c{i}" for i in range(80)])
    path.write_text(header + "\n" + ",".join(["0"] + [str(i) for i in range(80)]) + "\n")
    testcase = read_testcase(path, 5, 1)
    assert testcase.spec == EpisodeSpec(way=5, shot=1, query=15)
    assert testcase.support_ids.shape == (1, 5) and testcase.query_ids.shape == (1, 75)
    assert testcase.query_ids[0, 0] == "5"


@pytest.mark.parametrize("n_ids", [4, 5, 2, 9])
def test_wrong_column_count(tmp_path, n_ids):
    # 2-way 2-shot needs 4 support ids plus a positive multiple of 2 query ids.
    path = tmp_path / "t.csv"
    path.write_text(",".join(["e"] + [f"c{i}" for i in range(n_ids)]) + "\n" + ",".join(["0"] * (n_ids + 1)) + "\n")
    with pytest.raises(DataError) as err:
        read_testcase(path, 2, 2)
    assert str(path) in str(err.value)
    assert "2-way 2-shot" in str(err.value)


def test_empty_cell(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("e,a,b,c,d\n0,x,y,z,w\n1,x,y,,w\n")
    with pytest.raises(DataError) as err:
        read_testcase(path, 2, 1)
    assert str(path) in str(err.value)
    assert "line 3, column 4" in str(err.value)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_testcase(tmp_path / "missing.csv", 5, 1)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="not a readable CSV") as err:
        read_testcase(empty, 5, 1)
    assert str(empty) in str(err.value)


def test_unknown_id_names_file_line_and_id(tmp_path):
    table = _table()
    testcase = _small_testcase()
    testcase.query_ids[1, 2] = "img99-99"
    path = tmp_path / "val_testcase.csv"
    write_testcase(path, testcase)
    with pytest.raises(DataError) as err:
        load_fixed_episodes(path, _bank(table), 2, 1)
    message = str(err.value)
    assert str(path) in message
    assert "line 3" in message
    assert "'img99-99'" in message


def test_resolve_episodes_maps_ids_to_bank_rows(tmp_path):
    table = _table()
    bank = _bank(table)
    testcase = _small_testcase()
    episodes = resolve_episodes(tmp_path / "t.csv", testcase, bank, truth=None)
    assert len(episodes) == 2
    for row, episode in enumerate(episodes):
        assert [bank.ids[i] for i in episode.support.tolist()] == list(testcase.support_ids[row])
        assert [bank.ids[i] for i in episode.query.tolist()] == list(testcase.query_ids[row])
        assert episode.query_labels.tolist() == [-1] * 4  # no answers given
    truth = np.array([[1, 0, 0, 1], [0, 1, 1, 0]])
    episodes = resolve_episodes(tmp_path / "t.csv", testcase, bank, truth)
    assert [e.query_labels.tolist() for e in episodes] == truth.tolist()
    with pytest.raises(DataError, match="ground truth has shape"):
        resolve_episodes(tmp_path / "t.csv", testcase, bank, truth[:, :3])


def test_truth_path():
    assert truth_path(Path("/a/b/val_testcase.csv")) == Path("/a/b/val_testcase_gt.csv")


def test_load_fixed_episodes_reads_the_gt_file(tmp_path):
    table = _table()
    bank = _bank(table)
    path = tmp_path / "val_testcase.csv"
    write_testcase(path, _small_testcase())
    _, episodes = load_fixed_episodes(path, bank, 2, 1)
    assert all((e.query_labels == -1).all() for e in episodes)  # no gt file yet
    truth = np.array([[1, 0, 0, 1], [0, 1, 1, 0]])
    write_predictions(tmp_path / "val_testcase_gt.csv", ("0", "1"), truth)
    testcase, episodes = load_fixed_episodes(path, bank, 2, 1)
    _assert_same(testcase, _small_testcase())
    assert [e.query_labels.tolist() for e in episodes] == truth.tolist()
    assert all(e.spec == EpisodeSpec(way=2, shot=1, query=2) for e in episodes)


def test_gt_file_with_other_episodes(tmp_path):
    path = tmp_path / "val_testcase.csv"
    write_testcase(path, _small_testcase())
    write_predictions(truth_path(path), ("0", "2"), np.zeros((2, 4), dtype=int))
    with pytest.raises(DataError, match="episode ids differ") as err:
        load_fixed_episodes(path, _bank(_table()), 2, 1)
    assert str(truth_path(path)) in str(err.value)


def test_generate_testcase_is_deterministic_and_consistent():
    table = _table()
    spec = EpisodeSpec(way=3, shot=2, query=4)
    testcase, truth = generate_testcase(table, spec, n_episodes=12, seed=5)
    again, truth_again = generate_testcase(table, spec, n_episodes=12, seed=5)
    _assert_same(testcase, again)
    assert np.array_equal(truth, truth_again)
    other, _ = generate_testcase(table, spec, n_episodes=12, seed=6)
    assert not np.array_equal(testcase.query_ids, other.query_ids)

    assert testcase.spec == spec
    assert testcase.episode_ids == tuple(str(i) for i in range(12))
    assert testcase.support_ids.shape == (12, 6)
    assert testcase.query_ids.shape == truth.shape == (12, 12)
    label_of = dict(zip(table.ids, table.labels, strict=True))
    for row in range(12):
        support = [label_of[i] for i in testcase.support_ids[row]]
        classes = support[:: spec.shot]
        assert support == [c for c in classes for _ in range(spec.shot)]  # class-major
        assert len(set(classes)) == spec.way
        # Truth label t of a query = the t-th class of the support.
        assert [label_of[i] for i in testcase.query_ids[row]] == [classes[t] for t in truth[row]]
        assert sorted(truth[row].tolist()) == [t for t in range(spec.way) for _ in range(spec.query)]
        ids = [*testcase.support_ids[row], *testcase.query_ids[row]]
        assert len(set(ids)) == len(ids)


def test_generated_queries_are_shuffled():
    _, truth = generate_testcase(_table(), EpisodeSpec(way=5, shot=1, query=3), n_episodes=10, seed=0)
    assert all(truth[row].tolist() != sorted(truth[row].tolist()) for row in range(10))
    assert len({tuple(t) for t in truth.tolist()}) > 1


def test_write_fixed_episodes_round_trip(tmp_path):
    table = _table()
    bank = _bank(table)
    testcase, truth = generate_testcase(table, EpisodeSpec(way=4, shot=1, query=2), n_episodes=5, seed=1)
    path = tmp_path / "episodes" / "val.csv"
    write_fixed_episodes(path, testcase, truth)
    assert sorted(p.name for p in path.parent.iterdir()) == ["val.csv", "val_gt.csv"]
    ids, gt = read_predictions(path.parent / "val_gt.csv")
    assert ids == testcase.episode_ids and np.array_equal(gt, truth)
    loaded, episodes = load_fixed_episodes(path, bank, 4, 1)
    _assert_same(loaded, testcase)
    for row, episode in enumerate(episodes):
        assert episode.query_labels.tolist() == truth[row].tolist()
        support_classes = bank.labels[episode.support]
        assert torch.equal(bank.labels[episode.query], support_classes[episode.query_labels])


def test_an_episode_shape_that_the_answers_contradict_is_said_in_episode_terms(tmp_path):
    """eval_episode.way=10 against the course's 5-way 1-shot 15-query testcase with its answers."""
    path = tmp_path / "val_testcase.csv"
    ids = [f"img{c}-{k}" for k in range(PER_CLASS) for c in range(N_CLASSES)]
    support, query = np.array([ids[:5]] * 2, dtype=object), np.array([(ids * 2)[:75]] * 2, dtype=object)
    write_testcase(path, CaseFile(EpisodeSpec(way=5, shot=1, query=15), ("0", "1"), support, query))
    write_predictions(truth_path(path), ("0", "1"), np.zeros((2, 75), dtype=int))
    with pytest.raises(DataError) as err:
        load_fixed_episodes(path, _bank(_table()), 10, 1)
    assert str(err.value) == (
        f"{path}: its episodes are not 10-way 1-shot: that would leave 70 query ids, but its answers "
        "(val_testcase_gt.csv) have 75; its 80 ids per episode make 5-way 1-shot (set eval_episode.way and .shot)"
    )


def test_an_episode_whose_support_repeats_a_class_is_refused_by_name(tmp_path):
    path = tmp_path / "val_testcase.csv"
    testcase = _small_testcase()  # episode "1": supports img3-1 (n03) and img2-1 (n02)
    repeated = testcase.support_ids.copy()
    repeated[1] = ["img3-1", "img3-4"]  # both n03
    write_testcase(path, CaseFile(testcase.spec, testcase.episode_ids, repeated, testcase.query_ids))
    with pytest.raises(DataError) as err:
        load_fixed_episodes(path, _bank(_table()), 2, 1)
    assert str(err.value) == (
        f"{path}, line 3 (episode 1): support images img3-1 and img3-4 are both of class 'n03': "
        "an episode's support needs 2 different classes"
    )
    unlabelled = ImageBank(torch.zeros(N_CLASSES * PER_CLASS, 3, 2, 2, dtype=torch.uint8),
                           torch.zeros(N_CLASSES * PER_CLASS, dtype=torch.long), ("?",), _table().ids)  # fmt: skip
    assert len(load_fixed_episodes(path, unlabelled, 2, 1)[1]) == 2  # no labels to check against
