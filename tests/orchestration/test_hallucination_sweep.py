"""The method comparison of ``jobs/sweep_hallucination.py`` through Ray Train and MLflow, on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import RayHead, job_env, run_script

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_method_comparison_runs_every_method_and_logs_tsne(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    results = tmp_path / "results"
    done = run_script(
        "sweep_hallucination.py", "--part", "methods", "--data-root", str(tiny_builtin), "--results", str(results),
        "--epochs", "1", "--episodes", "3", "data.image_size=32", "data.n_val_episodes=20", "train.val_episodes=10",
        "eval_episode.query=10", "afhn.pretrain_epochs=0", env=job_env(isolated_cache, ray_head), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("methods")
    runs = client.search_runs([experiment.experiment_id])
    children = {r.data.tags["method"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(children) == {"protonet", "hallucination", "afhn", "afhn-report"}
    assert all(r.info.status == "FINISHED" and r.data.metrics["val_acc"] > 0 for r in children.values())
    for method in ("hallucination", "afhn", "afhn-report"):
        assert "tsne.png" in {a.path for a in client.list_artifacts(children[method].info.run_id)}
    assert "loss_gp" in children["afhn"].data.metrics and "loss_gp" not in children["afhn-report"].data.metrics
    assert children["afhn-report"].data.params["afhn.gan"] == "bce"
    assert "| afhn-report" in done.stdout and "| hallucination" in done.stdout
