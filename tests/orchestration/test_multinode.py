"""A study on a simulated two-node cluster (Ray's ``cluster_utils``, two raylets on this machine): trials run
on both nodes, read the decoded data from the object store, keep their checkpoints in the shared storage
(``$FEWSHOT_STORAGE``), and log into one MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient
from ray.cluster_utils import Cluster

from fewshot.config import ExperimentConfig
from fewshot.orchestration.tune import new_study, run_study
from fewshot.search import load_space
from fewshot.tracking.runs import Tracker

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPACE = """
method: protonet
samples: 2
asha: {grace_period: 2, reduction_factor: 2}
fixed:
  train.epochs: 2
  train.episodes_per_epoch: 3
  train.val_episodes: 5
  train.device: cpu
  data.image_size: 32
  data.n_val_episodes: 10
  eval_episode.query: 10
params:
  train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


@pytest.fixture
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_both_nodes_into_one_store(
    two_nodes: set[str], tiny_builtin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(two_nodes) == 2
    monkeypatch.setenv("FEWSHOT_RESULTS", str(tmp_path))
    shared = tmp_path / "shared"  # what every node of a real cluster reaches: cloud storage or a shared disk
    monkeypatch.setenv("FEWSHOT_STORAGE", str(shared))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    base = ExperimentConfig.model_validate({"data": {"root": str(tiny_builtin)}})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = new_study(space_file, load_space(space_file, base), base, tracker, tmp_path)
    outcome = run_study(study)  # 1 CPU a trial, 2 CPUs in all: the two trials run at once, one on each node
    assert not outcome.interrupted
    client = MlflowClient(tracker.uri)
    runs = client.search_runs([client.get_experiment_by_name("tune-protonet").experiment_id])
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    assert {t.data.tags["ray_node"] for t in trials} == two_nodes
    assert {t.data.tags["data_from"] for t in trials} == {"object store"}
    # Tune's experiment state and the trials' Ray Train checkpoints are in the shared storage, not on a node.
    assert (shared / "tune" / study.name / "tuner.pkl").is_file()
    assert len(list((shared / "tune" / study.name / "train").glob("trial-*/checkpoint_2*"))) == 2
    assert not (study.folder / "tuner.pkl").exists() and (study.folder / "trials.csv").is_file()
