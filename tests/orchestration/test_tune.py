"""Tuning studies: trial sizing, and ``jobs/tune.py`` end to end on a real local Ray and MLflow store —
interrupted by Ctrl-C or by killing the driver, then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig, FinetuneConfig
from fewshot.errors import ConfigError
from fewshot.orchestration.study import TrialPlan, plan_trials
from tests.conftest import REPO, RayHead, job_env

SPACE = """
method: protonet
samples: 4
asha: {grace_period: 1, reduction_factor: 2}
fixed:
  train.epochs: 3
  train.episodes_per_epoch: 4
  train.val_episodes: 10
  train.log_every: 4
  train.device: cpu
  data.image_size: 32
  data.n_val_episodes: 20
  eval_episode.query: 10
params:
  train_episode.way: {type: int, low: 2, high: 5}
  train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def test_trials_are_sized_from_the_cluster() -> None:
    assert plan_trials({"CPU": 2}, samples=9) == TrialPlan({"CPU": 1}, False, 2)
    assert plan_trials({"CPU": 2}, samples=1) == TrialPlan({"CPU": 1}, False, 1)
    assert plan_trials({"CPU": 8}, samples=9, cpus_per_trial=3) == TrialPlan({"CPU": 3}, False, 2)
    assert plan_trials({"CPU": 16, "GPU": 1}, samples=9) == TrialPlan({"CPU": 4, "GPU": 0.25}, True, 4)
    assert plan_trials({"CPU": 16, "GPU": 2}, samples=9, gpus_per_trial=0.5) == TrialPlan(
        {"CPU": 4, "GPU": 0.5}, True, 4
    )
    assert plan_trials({"CPU": 2, "GPU": 1}, samples=9, gpus_per_trial=0.25) == TrialPlan(
        {"CPU": 1, "GPU": 0.25}, True, 2
    )  # never more trials than CPUs for their workers


@pytest.mark.parametrize(
    ("cluster", "kwargs", "message"),
    [
        ({"CPU": 2}, {"gpus_per_trial": 0.5}, "no GPUs"),
        ({"CPU": 2}, {"cpus_per_trial": 4}, "has 2 CPUs"),
        ({"CPU": 4, "GPU": 1}, {"gpus_per_trial": 1.5}, "fraction of one GPU"),
        ({"CPU": 4, "GPU": 1}, {"gpus_per_trial": 2}, "fraction of one GPU"),
    ],
)
def test_impossible_trial_sizes_are_errors(cluster: dict[str, float], kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_trials(cluster, samples=4, **kwargs)


def _tune(results: Path, cache: Path, *args: str, head: RayHead | None = None) -> subprocess.Popen:
    """``jobs/tune.py`` in the background, on ``head``'s cluster or (the fault tests) a Ray of its own."""
    env = job_env(cache, head)
    command = [sys.executable, str(REPO / "jobs" / "tune.py"), "--results", str(results), *args]
    log = (results.parent / f"tune-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _runs(store: Path) -> list[Run]:
    if not any(store.parent.glob("tune/*/study.json")):  # until then the job may still be creating the store
        return []
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("tune-protonet")
    return [] if experiment is None else list(client.search_runs([experiment.experiment_id]))


def _wait_for(condition: Callable[[list[Run]], bool], store: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the study ended before it could be interrupted"
        if condition(_runs(store)):
            return
        time.sleep(1)
    raise TimeoutError("the study did not get far enough in time")


def _trials(runs: list[Run]) -> list[Run]:
    return [run for run in runs if "trial_id" in run.data.tags]


def _study_dir(results: Path) -> Path:
    (folder,) = (results / "tune").iterdir()
    return folder


def _check_resumed_study(results: Path, finished_before: dict[str, int]) -> None:
    store = results / "mlflow.db"
    client = MlflowClient(f"sqlite:///{store}")
    runs = _runs(store)
    trials = _trials(runs)
    (parent,) = [run for run in runs if "trial_id" not in run.data.tags]
    assert parent.info.status == "FINISHED"
    assert len(trials) == 4 and len({t.data.tags["trial_id"] for t in trials}) == 4  # no duplicate trial runs
    assert all(t.info.status == "FINISHED" and t.data.tags["asha"] for t in trials)
    for trial in trials:
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "loss")]
        assert steps == sorted(set(steps)), f"epochs logged twice: {steps}"
        if trial.info.run_id in finished_before:  # finished before the interruption: not run again
            assert trial.info.end_time == finished_before[trial.info.run_id]
    completed = [t for t in trials if t.data.tags["asha"] == "completed"]
    assert completed and all(t.data.metrics["val_acc"] > 0 for t in completed)
    assert all("best_epoch" in t.data.metrics for t in completed)  # the final evaluation was not cut short
    folder = _study_dir(results)
    best = load_config(ExperimentConfig, folder / "best-config.yaml")
    assert best.train.epochs == 3 and 2 <= best.train_episode.way <= 5
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "trials.md", "best-config.yaml", "optuna-curves.png"} <= logged
    assert len((folder / "trials.csv").read_text().splitlines()) == 5


def _study_with_a_finished_trial(results: Path, data: Path, cache: Path) -> subprocess.Popen:
    """A ProtoNet study started by ``jobs/tune.py`` on a Ray of its own, once one of its trials has finished."""
    (results.parent / "space.yaml").write_text(SPACE)
    study = _tune(results, cache, "--space", str(results.parent / "space.yaml"), "--data-root", str(data))
    _wait_for(lambda runs: any(t.info.status == "FINISHED" for t in _trials(runs)), results / "mlflow.db", study, 300)
    return study


def _finished(runs: list[Run]) -> dict[str, int]:
    return {t.info.run_id: t.info.end_time for t in _trials(runs) if t.info.status == "FINISHED"}


@pytest.mark.slow
@pytest.mark.ray
def test_a_study_stopped_by_ctrl_c_then_by_a_killed_driver_resumes_without_rerunning_trials(
    tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    """One study through both interruptions (each on a Ray of its own): Ctrl-C ends it cleanly, ``--resume``
    goes on; its driver and Ray are then killed outright, and ``--resume DIR`` finishes it. Every trial that
    finished before either interruption is kept as it was; the study ends with one MLflow run per trial."""
    results, store = tmp_path / "results", tmp_path / "results" / "mlflow.db"
    study = _study_with_a_finished_trial(results, tiny_builtin, isolated_cache)
    study.send_signal(signal.SIGINT)
    assert study.wait(timeout=180) == 130
    runs = _runs(store)
    assert all(run.info.status in ("FINISHED", "KILLED") for run in runs)  # nothing left RUNNING
    assert [run.info.status for run in runs if "trial_id" not in run.data.tags] == ["KILLED"]
    finished = _finished(runs)
    assert finished

    resumed = _tune(results, isolated_cache, "--resume")
    _wait_for(lambda runs: len(_finished(runs)) > len(finished), store, resumed, 300)
    os.killpg(resumed.pid, signal.SIGKILL)  # the driver and the local Ray it started, at once
    resumed.wait(timeout=60)
    time.sleep(2)
    finished = _finished(_runs(store)) | finished  # the earlier end times: a trial run again would differ
    again = _tune(results, isolated_cache, "--resume", str(_study_dir(results)))
    assert again.wait(timeout=400) == 0
    _check_resumed_study(results, finished)


FINETUNE_SPACE = """
method: finetune
samples: 2
asha: {grace_period: 1, reduction_factor: 2}
fixed:
  train.epochs: 2
  train.batch_size: 4
  train.device: cpu
  data.image_size: 16
params:
  train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  lr_scale.stem: {type: float, low: 0.01, high: 1.0, log: true}
"""


@pytest.mark.slow
@pytest.mark.ray
def test_a_finetuning_study_tunes_office_runs(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    space = tmp_path / "finetune.yaml"
    space.write_text(FINETUNE_SPACE)
    results = tmp_path / "results"
    results.mkdir()
    process = _tune(results, isolated_cache, "--space", str(space), "--data-root", str(tiny_builtin), head=ray_head)
    assert process.wait(timeout=600) == 0, (next(tmp_path.glob("tune-*.log"))).read_text()[-3000:]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune-finetune")
    trials = _trials(list(client.search_runs([experiment.experiment_id])))
    assert len(trials) == 2 and all(t.data.tags["method"] == "finetune" for t in trials)
    assert all(t.info.status == "FINISHED" and "val_acc" in t.data.metrics for t in trials)
    assert all(0.01 <= float(t.data.params["lr_scale.stem"]) <= 1.0 for t in trials)  # a per-layer rate
    best = load_config(FinetuneConfig, _study_dir(results) / "best-config.yaml")
    assert best.train.epochs == 2 and 0.01 <= best.lr_scale["stem"] <= 1.0
