"""End to end, as a user would: a real local Ray head, ``ray job submit`` of a sweep, results in MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import BIN, REPO, RayHead, run_script

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_ray_job_submit_runs_the_distance_sweep_into_mlflow(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    address, env = ray_head.dashboard, ray_head.env
    results = tmp_path / "results"
    # system metrics sampled every second: these runs last seconds
    runtime_env = {"env_vars": {"FEWSHOT_CACHE": str(isolated_cache), "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}}
    command = [  # jobs/submit.py: ray job submit, with this checkout's commit and user passed to the job
        str(BIN / "python"), "jobs/submit.py", "--address", address, "--runtime-env-json", json.dumps(runtime_env),
        "--",
        "python", "jobs/sweep_distance.py", "--data-root", str(tiny_builtin), "--results", str(results),
        "--epochs", "1", "--episodes", "4", "data.image_size=32", "data.n_val_episodes=20", "train.val_episodes=10",
    ]  # fmt: skip
    deadline = time.monotonic() + 240  # the job agent may come up well after the dashboard on a busy machine
    while True:
        job = subprocess.run(command, env={**env, "USER": "course-student"}, capture_output=True, text=True,
                             timeout=900, cwd=REPO)  # fmt: skip
        if "No available agent to submit job" not in job.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "| euclidean" in job.stdout and "| transformed" in job.stdout
    assert "vs euclidean: paired Δ ± 95% CI" in job.stdout and "| reference" in job.stdout

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    experiment = client.get_experiment_by_name("distance")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["distance"] for c in children} == {"euclidean", "cosine", "relation", "transformed"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["model.distance"] == child.data.tags["distance"]
        assert 0 <= child.data.metrics["report_acc"] <= 100 and child.data.metrics["report_ci95"] > 0
        # chosen on the val split's episodes, scored on the test split's (the built-in data has one)
        assert child.data.tags["protocol"] == "test-split"
        # the job's copy of the code has no .git: the commit came along from the submitting checkout
        assert child.data.tags["mlflow.source.git.commit"] == head and child.data.tags["git_sha"] == head[:7]
        assert child.data.tags["mlflow.user"] == "course-student"
        assert child.data.metrics["system/cpu_utilization_percentage"] >= 0  # MLflow's system metrics
        assert child.data.metrics["system/system_memory_usage_megabytes"] > 0
        assert child.data.tags["model_id"].startswith("m-") and child.data.metrics["select_acc"] >= 0
        contexts = {i.tags[0].value: i.dataset.name for i in child.inputs.dataset_inputs}
        assert contexts == {"train": "mini/train", "selection": "mini/val", "report": "mini/test"}
        assert re.search(r"on 10 val episodes .*; score on 20 test episodes", child.data.tags["protocol.detail"])
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "best.pt", "predictions.csv", "scores.csv", "learning_curves.png"} <= artifacts
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1]
    # the best run by its selection score is registered; its model loads from the registry
    best = max(children, key=lambda c: c.data.metrics["select_acc"])
    assert parents[0].data.tags["registered_model"] == "fewshot-distance/1"
    assert client.get_model_version("fewshot-distance", "1").run_id == best.info.run_id
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert parent_artifacts == {"comparison-distance.csv", "comparison-distance.md", "comparison-distance.png"}

    store = f"sqlite:///{results / 'mlflow.db'}"
    report = run_script("report.py", "--study", "distance", "--tracking-uri", store, "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr[-2000:]
    rebuilt = (tmp_path / "r" / "comparison-distance.md").read_text()
    table_lines = [line for line in job.stdout.splitlines() if line.startswith("|")]
    assert table_lines == [line for line in rebuilt.splitlines() if line.startswith("|")]
    assert "- protocol test-split: checkpoint = the best epoch on 10 val episodes" in rebuilt
