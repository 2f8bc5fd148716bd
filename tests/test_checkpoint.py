"""Checkpoints: written atomically, loaded without running pickled code, damage reported by name; and the
same seed gives the same run."""

from __future__ import annotations

import collections
from pathlib import Path

import pandas as pd
import pytest
import torch

from fewshot import checkpoint as checkpoint_module
from fewshot.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.training.run import run
from tests.conftest import tiny_overrides

STATE = {"epoch": 1, "model": {"w": torch.ones(3)}, "config": {}}


def test_a_crash_while_saving_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, STATE)

    def crash(state, target):
        Path(target).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {**STATE, "epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_truncated_checkpoint_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, STATE)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupt"):
        load_checkpoint(path)


class Payload:
    """An object a pickle would construct — and run code for — on load."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_checkpoint_holding_arbitrary_objects_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "model": collections.OrderedDict(), "config": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)  # weights_only=True: nothing is executed
    assert "pickled code ran" not in capsys.readouterr().out


def _run(root: Path, out: Path, seed: int):
    config = load_config(ExperimentConfig, None, tiny_overrides(root, seed=seed))
    return run(config, out)


def test_the_same_seed_gives_identical_episodes_and_accuracy(tiny_builtin: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "cache"))  # this test's own generated episodes
    first, second = _run(tiny_builtin, tmp_path / "a", 3), _run(tiny_builtin, tmp_path / "b", 3)
    assert first.fit.history == [{**h, "episodes_per_s": g["episodes_per_s"]}
                                 for h, g in zip(second.fit.history, first.fit.history, strict=True)]  # fmt: skip
    assert first.score.mean == second.score.mean and first.score.ci95 == second.score.ci95
    assert (
        first.outcome.predictions.read_bytes() == second.outcome.predictions.read_bytes()
    )  # same episodes, same answers
    other = _run(tiny_builtin, tmp_path / "c", 4)
    assert [h["loss"] for h in other.fit.history] != [h["loss"] for h in first.fit.history]
    # Another seed trains differently but is scored on the same episodes: one generated set for the shape.
    assert len(list((tmp_path / "cache" / "episodes").glob("*_gt.csv"))) == 1
    ids = [pd.read_csv(run.outcome.predictions)["episode_id"].tolist() for run in (first, other)]
    assert ids[0] == ids[1]
