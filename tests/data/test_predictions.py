"""Predictions CSVs and the course's scorer: mean accuracy ± 1.96·std(population)/√n, in percent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fewshot.data.predictions import mean_ci95, read_predictions, score_predictions, write_predictions
from fewshot.errors import DataError

TRUTH = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 0, 0]])
# Episode accuracies 4/4, 2/4, 0/4.
PRED = np.array([[0, 1, 2, 3], [3, 2, 0, 1], [0, 0, 1, 1]])
# By hand: mean 0.5; population std sqrt(((0.5)^2 + 0 + (0.5)^2) / 3) = sqrt(1/6) = 0.40824829;
# 1.96 * 0.40824829 / sqrt(3) = 0.46197643. (The sample std, 0.5, would give 56.58.)
MEAN, CI95 = 50.0, 46.197643


def _write(path, text):
    path.write_text(text)
    return path


def test_round_trip(tmp_path):
    path = tmp_path / "pred.csv"
    write_predictions(path, ("0", "1", "2"), PRED)
    assert path.read_text().splitlines() == [
        "episode_id,query0,query1,query2,query3",
        "0,0,1,2,3",
        "1,3,2,0,1",
        "2,0,0,1,1",
    ]
    ids, values = read_predictions(path)
    assert ids == ("0", "1", "2")
    assert values.dtype == np.int64
    assert np.array_equal(values, PRED)
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"]


def test_course_shape_round_trip(tmp_path):
    predictions = np.random.default_rng(0).integers(0, 5, size=(600, 75))
    ids = tuple(str(i) for i in range(600))
    write_predictions(tmp_path / "p.csv", ids, predictions)
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header == ["episode_id"] + [f"query{i}" for i in range(75)]
    read_ids, values = read_predictions(tmp_path / "p.csv")
    assert read_ids == ids and np.array_equal(values, predictions)


def test_write_rejects_misshaped_predictions(tmp_path):
    with pytest.raises(ValueError, match="one row of predictions per episode"):
        write_predictions(tmp_path / "p.csv", ("0", "1"), PRED)
    with pytest.raises(ValueError):
        write_predictions(tmp_path / "p.csv", ("0",), np.array([1, 2, 3]))
    assert not (tmp_path / "p.csv").exists()


def test_mean_ci95_by_hand():
    score = mean_ci95([1.0, 0.5, 0.0])
    assert score.mean == pytest.approx(MEAN, abs=1e-9)
    assert score.ci95 == pytest.approx(CI95, abs=1e-5)
    assert np.array_equal(score.per_episode, [1.0, 0.5, 0.0])
    assert str(score) == "50.00 ± 46.20 %"


def test_mean_ci95_of_identical_episodes_has_no_spread():
    score = mean_ci95(np.full(600, 0.6))
    assert score.mean == pytest.approx(60.0)
    assert score.ci95 == pytest.approx(0.0, abs=1e-9)


def test_mean_ci95_of_nothing():
    with pytest.raises(DataError, match="zero episodes"):
        mean_ci95([])


def test_score_by_hand(tmp_path):
    write_predictions(tmp_path / "pred.csv", ("0", "1", "2"), PRED)
    write_predictions(tmp_path / "gt.csv", ("0", "1", "2"), TRUTH)
    score = score_predictions(tmp_path / "pred.csv", tmp_path / "gt.csv")
    assert np.array_equal(score.per_episode, [1.0, 0.5, 0.0])
    assert score.mean == pytest.approx(MEAN)
    assert score.ci95 == pytest.approx(CI95, abs=1e-5)


def test_score_with_episodes_in_another_order(tmp_path):
    write_predictions(tmp_path / "gt.csv", ("a", "b", "c"), TRUTH)
    # The same predictions, rows in another order, plus an episode the truth does not have.
    _write(
        tmp_path / "pred.csv",
        "episode_id,query0,query1,query2,query3\nc,0,0,1,1\nextra,0,0,0,0\na,0,1,2,3\nb,3,2,0,1\n",
    )
    score = score_predictions(tmp_path / "pred.csv", tmp_path / "gt.csv")
    assert np.array_equal(score.per_episode, [1.0, 0.5, 0.0])  # in the truth's order
    assert score.ci95 == pytest.approx(CI95, abs=1e-5)


def test_missing_episode(tmp_path):
    write_predictions(tmp_path / "gt.csv", ("0", "1", "2"), TRUTH)
    write_predictions(tmp_path / "pred.csv", ("0", "2"), PRED[[0, 2]])
    with pytest.raises(DataError) as err:
        score_predictions(tmp_path / "pred.csv", tmp_path / "gt.csv")
    assert str(tmp_path / "pred.csv") in str(err.value)
    assert "episode 1" in str(err.value)


def test_different_query_counts(tmp_path):
    write_predictions(tmp_path / "gt.csv", ("0", "1", "2"), TRUTH)
    write_predictions(tmp_path / "pred.csv", ("0", "1", "2"), PRED[:, :3])
    with pytest.raises(DataError, match="3 queries per episode"):
        score_predictions(tmp_path / "pred.csv", tmp_path / "gt.csv")


@pytest.mark.parametrize(
    "header",
    [
        "id,query0,query1",  # first column misnamed
        "episode_id,query1,query2",  # numbering must start at 0
        "episode_id,query0,q1",
        "episode_id,query1,query0",  # out of order
        "episode_id",  # no queries at all
        "id,filename,label",  # an Office-Home predictions file, not a few-shot one
        'episode_id,"query\n0"',  # a quoted newline in a column name: the error stays one line
    ],
)
def test_bad_header(tmp_path, header):
    n_values = len(header.split(",")) - 1
    path = _write(tmp_path / "p.csv", header + "\n" + ",".join(["0"] * (n_values + 1)) + "\n")
    with pytest.raises(DataError, match="header must be") as err:
        read_predictions(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["x", "", "1.5", "1e3", "NaN", "two", "99999999999999999999"])
def test_not_a_class_number(tmp_path, value):
    path = _write(tmp_path / "p.csv", f"episode_id,query0,query1\n0,1,0\n1,0,1\n2,{value},1\n3,1,1\n")
    with pytest.raises(DataError, match="not a class number") as err:
        read_predictions(path)
    assert str(path) in str(err.value)
    assert "line 4" in str(err.value)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_predictions(tmp_path / "missing.csv")
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\xc3\x28")
    with pytest.raises(DataError) as err:
        read_predictions(path)
    assert str(err.value) == f"{path}: line 1: byte 0xff is not UTF-8 (save the file as UTF-8)"


def test_per_episode_scores_round_trip_and_pair_only_on_the_same_episodes(tmp_path: Path) -> None:
    from fewshot.data.predictions import mean_ci95, paired_difference, read_scores, write_scores

    ids = ["0", "1", "2", "3"]
    write_scores(tmp_path / "a.csv", ids, mean_ci95([1.0, 0.5, 0.25, 0.0]))
    write_scores(tmp_path / "b.csv", list(reversed(ids)), mean_ci95([0.0, 0.0, 0.5, 1.0]))  # same episodes
    a, b = read_scores(tmp_path / "a.csv"), read_scores(tmp_path / "b.csv")
    assert a.loc["0"] == 1.0 and b.loc["0"] == 1.0 and b.loc["3"] == 0.0  # ids kept as text, "0" not 0
    difference = paired_difference(a, b)  # episode by episode: 0, 0, 0.25, 0
    assert difference.mean == pytest.approx(6.25) and difference.per_episode.tolist() == [0, 0, 0.25, 0]
    write_scores(tmp_path / "c.csv", ["0", "1", "2", "9"], mean_ci95([1.0, 0.5, 0.25, 0.0]))
    with pytest.raises(DataError, match="not scored on the same episodes"):
        paired_difference(a, read_scores(tmp_path / "c.csv"))
