"""A study read back from a real MLflow store: trial ranking, best config, plots logged on the parent."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from fewshot.config.loading import flatten, load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.search import SearchSpace, load_space
from fewshot.tracking.runs import Tracker
from fewshot.tracking.studies import optuna_study, publish_study, trial_table

SPACE = """
params:
  train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  train_episode.way: {type: int, low: 5, high: 30}
fixed:
  train.epochs: 3
  train.episodes_per_epoch: 10
"""


@pytest.fixture
def space(tmp_path: Path) -> SearchSpace:
    (tmp_path / "space.yaml").write_text(SPACE)
    return load_space(tmp_path / "space.yaml")


def _trial(tracker: Tracker, parent: str, space: SearchSpace, trial: str, lr: float, way: int,
           curve: list[float], verdict: str | None, final: float | None = None) -> str:  # fmt: skip
    run = tracker.start_run("tune-test", trial, parent, {"trial_id": trial})
    tracker.log_params(run, flatten(space.trial_config({"train.optim.lr": lr, "train_episode.way": way})))
    for epoch, acc in enumerate(curve, 1):
        tracker.log_metrics(run, {"loss": 1.0 / epoch, "val_acc": acc}, step=epoch)
    if final is not None:  # a completed run logs its best checkpoint's score on the report episodes
        tracker.log_metrics(run, {"report_acc": final, "report_ci95": 0.8}, step=len(curve))
    if verdict is not None:
        tracker.set_tags(run, {"asha": verdict})
        tracker.finish(run)
    return run


def test_trials_are_ranked_on_their_selection_score_never_their_report_score(
    space: SearchSpace, tmp_path: Path
) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("tune-test", "study")
    # "a" reports the higher score, but "c" validated better: choosing "a" would select on the reported episodes.
    _trial(tracker, parent, space, "a", 1e-3, 5, [30, 40, 45], "completed", final=49.0)
    _trial(tracker, parent, space, "b", 1e-2, 20, [35], "stopped at epoch 1")
    _trial(tracker, parent, space, "c", 3e-4, 10, [31, 42, 50], "completed", final=46.0)
    table = trial_table(tracker, parent, list(space.params))
    assert list(table["trial"]) == ["c", "a", "b"]
    assert list(table["epochs"]) == [3, 3, 1] and list(table["episodes"]) == [30, 30, 10]
    assert list(table["final_acc"][:2]) == [46.0, 49.0] and table["final_acc"].isna().iloc[2]
    assert list(table["best_val_acc"]) == [50, 45, 35]  # the selection curve's best
    assert table["train_episode.way"].tolist() == [10, 5, 20] and table["train.optim.lr"].iloc[0] == 3e-4
    study = optuna_study(table, space)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert study.best_value == 50 and study.trials[2].intermediate_values == {1: 35.0}


def test_publish_writes_table_best_config_and_plots_on_the_parent(space: SearchSpace, tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("tune-test", "study")
    _trial(tracker, parent, space, "a", 1e-3, 5, [30, 40, 45], "completed", final=49.0)
    _trial(tracker, parent, space, "c", 3e-4, 10, [31, 42, 50], "completed", final=46.0)
    _trial(tracker, parent, space, "d", 5e-3, 25, [20, 21, 19], "completed", final=18.0)
    _trial(tracker, parent, space, "b", 1e-2, 20, [35], "stopped at epoch 1")
    base = load_config(ExperimentConfig, None, ["seed=7"])
    summary = publish_study(tracker, parent, space, base, tmp_path / "study")
    names = {path.name for path in summary.files}
    assert {"trials.csv", "trials.md", "best-config.yaml", "optuna-history.png", "optuna-curves.png",
            "optuna-importance.png"} <= names  # fmt: skip
    best = load_config(ExperimentConfig, summary.best_config)  # ready for --config of a sweep or train job
    assert (best.train.optim.lr, best.train_episode.way, best.seed, best.train.epochs) == (3e-4, 10, 7, 3)
    logged = {a.path for a in MlflowClient(tracker.uri).list_artifacts(parent)}
    assert names <= logged
    run = tracker.get(parent)
    assert run.metrics["best_val_acc"] == 50 and run.metrics["report_acc"] == 46.0 and run.metrics["episodes"] == 100
    assert run.tags["best_trial"] == "c"
    assert summary.best_config.read_text().startswith(
        "# best trial c of the study, chosen on its selection score 50.00 %; its report score: 46.00 ± 0.80 %"
    )
    assert "stopped at epoch 1" in (tmp_path / "study" / "trials.md").read_text()


def test_a_study_with_only_stopped_trials_has_no_best_config(space: SearchSpace, tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("tune-test", "study")
    _trial(tracker, parent, space, "b", 1e-2, 20, [35], "stopped at epoch 1")
    summary = publish_study(tracker, parent, space, ExperimentConfig(), tmp_path / "study")
    assert summary.best_config is None and len(summary.table) == 1
    assert "optuna-history.png" not in {path.name for path in summary.files}
