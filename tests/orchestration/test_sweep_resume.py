"""A sweep whose driver is killed mid-way is resumed by the same command with ``--resume``: nothing is trained
twice, and MLflow holds one run per variant (a real Ray head, a real MLflow store, a real SIGKILL)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewshot.tracking.runs import RunRecord, Tracker
from tests.conftest import REPO, RayHead, job_env, run_script

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_a_killed_sweep_resumes_without_training_anything_twice(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    results = tmp_path / "results"
    tiny = ["data.image_size=32", "data.n_val_episodes=20", "train.val_episodes=10", "eval_episode.query=10"]
    args = ["--data-root", str(tiny_builtin), "--results", str(results), "--epochs", "2", "--episodes", "4", *tiny]
    env = job_env(isolated_cache, ray_head)
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen([sys.executable, "jobs/sweep_distance.py", *args], cwd=REPO, env=env, stderr=log)
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}")
    deadline = time.monotonic() + 600
    # a first run has scored (files, not the store: the driver may still be creating its tables), then is FINISHED
    while not list(results.glob("distance/*/*/predictions.csv")) or not (finished := _children(tracker, "FINISHED")):
        assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(1)
    driver.kill()  # as a lost driver: no Ctrl-C handler runs
    driver.wait()
    assert len(_children(tracker, "FINISHED")) < 4  # some of the sweep was left to do

    resumed = run_script("sweep_distance.py", *args, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "| euclidean" in resumed.stdout and "| transformed" in resumed.stdout
    runs = _children(tracker)
    assert sorted(run.tags["distance"] for run in runs) == ["cosine", "euclidean", "relation", "transformed"]
    assert all(run.status == "FINISHED" for run in runs)
    for earlier in finished:  # kept as they were, not trained again
        assert tracker.get(earlier.run_id).end_time == earlier.end_time
    for run in runs:  # every epoch of every run logged once: an interrupted run went on from its checkpoint
        assert sorted(step for step, _ in tracker.history(run.run_id, "loss")) == [1, 2], run.name
    assert f"already finished (MLflow run {finished[0].run_id})" in resumed.stderr


def _children(tracker: Tracker, status: str | None = None) -> list[RunRecord]:
    parent = tracker.latest("distance", "sweep", "distance-sweep")
    assert parent is not None
    return [run for run in tracker.children(parent.run_id) if status is None or run.status == status]
