"""A small Tune study run in the test process on whatever Ray the test started, for cluster-shape tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.study import Study, new_study
from fewshot.orchestration.tune import run_study
from fewshot.search import load_space
from fewshot.tracking.runs import Tracker


def protonet_space(samples: int, **fixed: object) -> str:
    """A study of ``samples`` tiny ProtoNet trials of 2 epochs (ASHA never stops one) over the learning rate;
    ``fixed`` adds to or overrides its fixed settings."""
    return yaml.safe_dump({
        "method": "protonet",
        "samples": samples,
        "asha": {"grace_period": 2, "reduction_factor": 2},
        "fixed": {
            "train.epochs": 2, "train.episodes_per_epoch": 3, "train.val_episodes": 5, "train.device": "cpu",
            "data.image_size": 32, "data.n_val_episodes": 10, "eval_episode.query": 10, **fixed,
        },
        "params": {"train.optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
    })  # fmt: skip


def run_protonet_study(space: str, data_root: Path, folder: Path, **study_args: Any) -> tuple[Study, list[Run]]:
    """Run the ProtoNet study ``space`` (YAML text) on ``data_root`` to the end, with its results and MLflow
    store in ``folder``; returns the study and its trials' runs, all of them finished."""
    space_file = folder / "space.yaml"
    space_file.write_text(space)
    base = ExperimentConfig.model_validate({"data": {"root": str(data_root)}})
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    study = new_study(space_file, load_space(space_file, base), base, tracker, folder, **study_args)
    assert not run_study(study).interrupted
    client = MlflowClient(tracker.uri)
    runs = client.search_runs([client.get_experiment_by_name("tune-protonet").experiment_id])
    trials = [run for run in runs if "trial_id" in run.data.tags]
    assert all(trial.info.status == "FINISHED" for trial in trials)
    return study, trials
