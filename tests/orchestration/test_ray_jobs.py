"""End to end, as a user would, on a real local Ray head with a real MLflow store: a distance sweep whose driver
is killed mid-way (a real SIGKILL), then resumed by the same command with ``--resume`` through ``ray job
submit``. Nothing is trained twice, MLflow holds one run per variant, and the results are complete."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fewshot.tracking.runs import RunRecord, Tracker
from tests.conftest import BIN, REPO, RayHead, run_script

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_a_killed_sweep_resumed_through_ray_job_submit_trains_nothing_twice(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    results = tmp_path / "results"
    sweep = ["jobs/sweep_distance.py", "--data-root", str(tiny_builtin), "--results", str(results), "--epochs", "2",
             "--episodes", "4", "data.image_size=32", "data.n_val_episodes=20", "train.val_episodes=10"]  # fmt: skip
    env = {**ray_head.env, "FEWSHOT_CACHE": str(isolated_cache), "USER": "course-student"}

    # 1. The driver, started by hand on the cluster, is killed as a lost driver (no Ctrl-C handler runs) once
    #    a first run has scored (files, not the store: the driver may still be creating its tables) and ended.
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen([sys.executable, *sweep], cwd=REPO, env=env, stderr=log)
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}")
    deadline = time.monotonic() + 600
    while not list(results.glob("distance/*/*/predictions.csv")) or not (finished := _children(tracker, "FINISHED")):
        assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(1)
    driver.kill()
    driver.wait()
    ended_before_the_job = {run.run_id for run in _children(tracker, "FINISHED")}
    assert len(ended_before_the_job) < 4  # some of the sweep was left to do

    # 2. The same command with --resume, as a Ray job (jobs/submit.py: ray job submit, with this checkout's
    #    commit and user passed to the job); system metrics sampled five times a second: these runs last seconds.
    sampling = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}
    runtime_env = {"env_vars": {"FEWSHOT_CACHE": str(isolated_cache), **sampling}}
    command = [str(BIN / "python"), "jobs/submit.py", "--address", ray_head.dashboard,
               "--runtime-env-json", json.dumps(runtime_env), "--", "python", *sweep, "--resume"]  # fmt: skip
    deadline = time.monotonic() + 240  # the job agent may come up well after the dashboard on a busy machine
    while True:
        job = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        if "No available agent to submit job" not in job.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "| euclidean" in job.stdout and "| transformed" in job.stdout
    assert "vs euclidean: paired Δ ± 95% CI" in job.stdout and "| reference" in job.stdout
    assert f"already finished (MLflow run {finished[0].run_id})" in job.stdout + job.stderr

    client = MlflowClient(tracker.uri)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    runs = client.search_runs([client.get_experiment_by_name("distance").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4  # one parent, one run per variant: nothing started twice
    assert {c.data.tags["distance"] for c in children} == {"euclidean", "cosine", "relation", "transformed"}
    for earlier in finished:  # kept as they were, not trained again
        assert client.get_run(earlier.run_id).info.end_time == earlier.end_time
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["model.distance"] == child.data.tags["distance"]
        assert 0 <= child.data.metrics["report_acc"] <= 100 and child.data.metrics["report_ci95"] > 0
        # chosen on the val split's episodes, scored on the test split's (the built-in data has one)
        assert child.data.tags["protocol"] == "test-split"
        # the job's copy of the code has no .git: the commit came along from the submitting checkout
        assert child.data.tags["mlflow.source.git.commit"] == head and child.data.tags["git_sha"] == head[:7]
        assert child.data.tags["mlflow.user"] == "course-student"
        assert child.data.tags["model_id"].startswith("m-") and child.data.metrics["select_acc"] >= 0
        contexts = {i.tags[0].value: i.dataset.name for i in child.inputs.dataset_inputs}
        assert contexts == {"train": "mini/train", "selection": "mini/val", "report": "mini/test"}
        assert re.search(r"on 10 val episodes .*; score on 20 test episodes", child.data.tags["protocol.detail"])
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "best.pt", "predictions.csv", "scores.csv", "learning_curves.png"} <= artifacts
        # every epoch logged once: a run interrupted by the kill went on from its checkpoint
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss")) == [1, 2]
    # MLflow's system metrics, sampled as the job's runtime env asked, in every run that trained or scored in the
    # job (a resumed one may have only its scoring left: seconds)
    for child in (c for c in children if c.info.run_id not in ended_before_the_job):
        assert child.data.metrics["system/cpu_utilization_percentage"] >= 0
        assert child.data.metrics["system/system_memory_usage_megabytes"] > 0
    # the best run by its selection score is registered; its model loads from the registry
    best = max(children, key=lambda c: c.data.metrics["select_acc"])
    assert parents[0].data.tags["registered_model"] == "fewshot-distance/1"
    assert client.get_model_version("fewshot-distance", "1").run_id == best.info.run_id
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert parent_artifacts == {"comparison-distance.csv", "comparison-distance.md", "comparison-distance.png"}

    report = run_script("report.py", "--study", "distance", "--tracking-uri", tracker.uri, "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr[-2000:]
    rebuilt = (tmp_path / "r" / "comparison-distance.md").read_text()
    table_lines = [line for line in job.stdout.splitlines() if line.startswith("|")]
    assert table_lines == [line for line in rebuilt.splitlines() if line.startswith("|")]
    assert "- protocol test-split: checkpoint = the best epoch on 10 val episodes" in rebuilt


def _children(tracker: Tracker, status: str | None = None) -> list[RunRecord]:
    parent = tracker.latest("distance", "sweep", "distance-sweep")
    assert parent is not None
    return [run for run in tracker.children(parent.run_id) if status is None or run.status == status]
