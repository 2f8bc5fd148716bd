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
    # Another seed trains differently but is selected and scored on the same episodes: one generated set per
    # split and shape (val: selection, test: report).
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "episodes").glob("*_gt.csv")) == ["test", "val"]
    ids = [pd.read_csv(run.outcome.predictions)["episode_id"].tolist() for run in (first, other)]
    assert ids[0] == ids[1]


def _saved_run(config: ExperimentConfig, path: Path) -> dict[str, torch.Tensor]:
    """A few-shot checkpoint of a freshly built ``config`` model; returns its weights."""
    from fewshot.config.loading import config_dict
    from fewshot.methods.build import build_method

    torch.manual_seed(1)
    state = build_method(config).state_dict()
    save_checkpoint(path, {"epoch": 1, "model": state, "config": config_dict(config)})
    return state


def test_model_init_starts_a_relation_run_from_a_euclidean_runs_encoder(tiny_builtin: Path, tmp_path: Path) -> None:
    from fewshot.data.cache import load_bank
    from fewshot.training import episodic
    from fewshot.training.loop import Placement

    euclidean = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin))
    weights = _saved_run(euclidean, tmp_path / "euclidean.pt")
    overrides = [*tiny_overrides(tiny_builtin), "model.distance=relation", f"model.init={tmp_path / 'euclidean.pt'}"]
    relation = load_config(ExperimentConfig, None, overrides)
    torch.manual_seed(2)
    model = episodic.recipe(relation, load_bank, Placement(device=torch.device("cpu"))).model
    own = model.state_dict()
    encoder = [key for key in weights if key.startswith("encoder.")]
    assert encoder and all(torch.equal(own[key], weights[key]) for key in encoder)
    torch.manual_seed(2)
    fresh = episodic.recipe(relation.model_copy(update={"model": relation.model.model_copy(update={"init": None})}),
                            load_bank, Placement(device=torch.device("cpu"))).model.state_dict()  # fmt: skip
    assert all(torch.equal(own[key], fresh[key]) for key in own if key.startswith("distance."))  # starts fresh
    assert not all(torch.equal(own[key], fresh[key]) for key in encoder)


def test_model_init_from_a_checkpoint_that_does_not_fit_is_one_line(tiny_builtin: Path, tmp_path: Path) -> None:
    from fewshot.methods.build import build_method, initialise

    wider = load_config(ExperimentConfig, None, [*tiny_overrides(tiny_builtin), "model.hidden=32"])
    _saved_run(wider, tmp_path / "wide.pt")
    model = build_method(load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin)))
    with pytest.raises(CheckpointError, match=r"wide.pt: encoder\.\S+ has shape \(32, .*this model needs \(64, "):
        initialise(model, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        initialise(model, tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.mkdir(), "is a folder: give the checkpoint file in it"),
        (lambda p: p.write_bytes(bytes(range(256)) * 16), "is truncated or corrupt (not a file of weights"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 100), "is truncated or corrupt"),
    ],
    ids=["empty", "folder", "random", "bad-zip"],
)
def test_a_bad_checkpoint_file_is_one_line_that_never_advises_unsafe_loading(tmp_path: Path, make, message) -> None:
    path = tmp_path / "best.pt"
    make(path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    text = str(caught.value)
    assert text.startswith(f"checkpoint {path} {message}") and "\n" not in text
    assert "weights_only" not in text and "False" not in text


def test_resuming_from_an_empty_last_checkpoint_is_a_checkpoint_error(tiny_builtin: Path, tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin))
    with pytest.raises(CheckpointError, match=r"last\.pt is empty"):
        run(config, tmp_path)
