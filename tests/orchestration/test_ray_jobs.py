"""End to end, as a user would: a real local Ray head, ``ray job submit`` of a sweep, results in MLflow."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """``ray start --head`` with auth disabled (a local cluster), the venv first on PATH as after activation."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    port, dashboard = _free_port(), _free_port()
    # --block keeps this head in the foreground: interrupting it stops its own processes, and only those
    # (``ray stop`` would stop every Ray on the machine).
    start = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
             # its own agent port: the default one may belong to another Ray on this machine (then no job agent)
             f"--dashboard-agent-listen-port={_free_port()}"]  # fmt: skip
    head = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(address, head)
        yield address, env
    finally:
        head.send_signal(signal.SIGINT)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        current = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would clean up after this head
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def _wait_for_dashboard(address: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard at {address} did not answer in {timeout:.0f}s")


def test_ray_job_submit_runs_the_distance_sweep_into_mlflow(
    ray_head: tuple[str, dict[str, str]], tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    address, env = ray_head
    results = tmp_path / "results"
    runtime_env = {"env_vars": {"FEWSHOT_CACHE": str(isolated_cache)}}
    command = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps(runtime_env), "--",
        "python", "jobs/sweep_distance.py", "--data-root", str(tiny_builtin), "--results", str(results),
        "--epochs", "1", "--episodes", "4", "data.image_size=32", "data.n_val_episodes=20", "train.val_episodes=10",
    ]  # fmt: skip
    deadline = time.monotonic() + 240  # the job agent may come up well after the dashboard on a busy machine
    while True:
        job = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        if "No available agent to submit job" not in job.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "| euclidean" in job.stdout and "| transformed" in job.stdout

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distance")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["distance"] for c in children} == {"euclidean", "cosine", "relation", "transformed"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["model.distance"] == child.data.tags["distance"]
        assert 0 <= child.data.metrics["val_acc"] <= 100 and child.data.metrics["val_ci95"] > 0
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "best.pt", "predictions.csv", "learning_curves.png"} <= artifacts
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1]
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert parent_artifacts == {"comparison-distance.csv", "comparison-distance.md", "comparison-distance.png"}

    store = f"sqlite:///{results / 'mlflow.db'}"
    report = subprocess.run(
        [
            sys.executable,
            "jobs/report.py",
            "--study",
            "distance",
            "--tracking-uri",
            store,
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    rebuilt = (tmp_path / "r" / "comparison-distance.md").read_text()
    table_lines = [line for line in job.stdout.splitlines() if line.startswith("|")]
    assert table_lines == [line for line in rebuilt.splitlines() if line.startswith("|")]
