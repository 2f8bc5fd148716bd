"""Ray Train runs on a real local Ray: data-parallel workers, and a worker process killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient

from fewshot.checkpoint import load_checkpoint
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig, PretrainConfig
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.tracking.runs import Tracker
from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A cluster of its own: a worker process is killed here, and Ray Train's global state from other clusters
    in this process must not leak in."""
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _job(root: Path, tmp_path: Path, tracker: Tracker, workers: int, **extra: object) -> TrainJob:
    config = load_config(ExperimentConfig, None, tiny_overrides(root, **extra))
    run_id = tracker.start_run("test", f"{workers}-workers")
    return TrainJob(config, f"t-{run_id[:8]}", tmp_path / "run", tmp_path / "ray", tracker.uri, run_id, workers)


def test_two_data_parallel_workers_train_and_only_rank_0_logs(
    local_ray: None, tiny_builtin: Path, tmp_path: Path
) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    job = _job(tiny_builtin, tmp_path, tracker, workers=2)
    result = run_training(job)
    assert result.error is None and result.metrics["epoch"] == 2
    client = MlflowClient(tracker.uri)
    assert [m.step for m in client.get_metric_history(job.mlflow_run_id, "loss")] == [1, 2]
    assert "val_acc" in client.get_run(job.mlflow_run_id).data.metrics


def test_byol_pretraining_runs_data_parallel_on_two_workers(
    local_ray: None, tiny_builtin: Path, tmp_path: Path
) -> None:
    config = load_config(PretrainConfig, None, [
        f"data.root={tiny_builtin}", "data.image_size=16", "data.n_val_episodes=10", "eval_episode.query=5",
        "train.epochs=1", "train.batch_size=40", "train.val_episodes=5", "train.device=cpu",
        "byol.hidden=64", "byol.projection=16"])  # fmt: skip
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.start_run("test", "byol-2-workers")
    job = TrainJob(config, f"b-{run_id[:8]}", tmp_path / "run", tmp_path / "ray", tracker.uri, run_id, 2)
    result = run_training(job)
    assert result.error is None and result.metrics["epoch"] == 1
    assert result.metrics["batches_per_s"] > 0  # 160 images, 20 a worker per step: 4 steps
    client = MlflowClient(tracker.uri)
    assert {"backbone.pt", "best.pt"} <= {a.path for a in client.list_artifacts(run_id)}
    logged = load_checkpoint(Path(client.download_artifacts(run_id, "best.pt", str(tmp_path))))
    assert "optimizers" not in logged and "target_backbone.conv1.weight" in logged["model"]  # the model only


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _worker_pids() -> list[int]:
    """Ray Train worker processes of this test's own Ray (descendants of this process), never anyone else's."""
    out = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True).stdout
    mine = []
    for pid in map(int, out.split()):
        ancestor = pid
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = _parent(ancestor)
        if ancestor == os.getpid():
            mine.append(pid)
    return mine


def test_a_killed_worker_resumes_from_its_last_checkpoint(local_ray: None, tiny_builtin: Path, tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    job = _job(tiny_builtin, tmp_path, tracker, workers=1, **{"train.epochs": 4, "train.episodes_per_epoch": 25})
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_training(job)))
    thread.start()
    checkpoints = tmp_path / "ray" / job.name
    deadline = time.monotonic() + 300
    while not any(checkpoints.glob("checkpoint_*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # wait for epoch 1's checkpoint, then kill the worker in the middle of epoch 2
    pids = _worker_pids()
    assert pids, "no Ray Train worker process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=600)
    result = outcome["result"]
    assert result.error is None and result.metrics["epoch"] == 4
    history = MlflowClient(tracker.uri).get_metric_history(job.mlflow_run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # one continuous history: no gaps, no duplicates
