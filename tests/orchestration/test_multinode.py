"""A study on a simulated cluster of two GPU nodes (Ray's ``cluster_utils``, two raylets on this machine, each
declaring one GPU): trials run on both nodes, share a GPU through fractional resources, read the decoded data
from the object store, keep their checkpoints in the shared storage (``$FEWSHOT_STORAGE``), and log into one
MLflow store.

It also proves the data reaches each node once: the head node (1 CPU) runs one trial and the worker node
(2 CPUs) two at the same time, on halves of its one GPU, yet each node's object store ends up holding one
copy of every shared bank and has created the banks' bytes only once — the driver's ``ray.put`` on the head,
one pull on the worker.

This machine has no CUDA device, so the runs train on the CPU (``train.device=cpu``); what is tested is Ray's
side of the GPU path: the GPU share each trial is given, and that a worker given a GPU it would use
(``train.device=auto``) fails with a one-line error instead of a CUDA crash.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from ray._private.internal_api import node_stats
from ray.cluster_utils import Cluster
from ray.train import TrainingFailedError

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration import tune
from fewshot.orchestration.shared import SharedBanks, share_banks
from fewshot.orchestration.sweep import run_sweep
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.tracking.runs import Tracker
from tests.conftest import load_job, tiny_overrides
from tests.orchestration.studies import protonet_space, run_protonet_study

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPACE = protonet_space(samples=3)


@pytest.fixture(scope="module")
def two_nodes() -> dict[str, dict[str, Any]]:
    """A 1-CPU head and a 2-CPU worker node, each with one (logical) GPU, shared by this module's tests; yields
    their ``ray.nodes()`` entries by role."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    yield {("head" if "node:__internal_head__" in node["Resources"] else "worker"): node for node in nodes}
    ray.shutdown()
    cluster.shutdown()


def created_in_store(node: dict[str, Any]) -> int:
    """Bytes of all objects the node's object store ever created: its own puts and copies pulled from others."""
    stats = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False)
    return stats.store_stats.cumulative_created_bytes


def test_trials_spread_over_both_nodes_into_one_store(
    two_nodes: dict[str, dict[str, Any]], tiny_builtin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert two_nodes.keys() == {"head", "worker"}
    shared = tmp_path / "shared"  # what every node of a real cluster reaches: cloud storage or a shared disk
    monkeypatch.setenv("FEWSHOT_STORAGE", str(shared))
    shared_banks: list[SharedBanks] = []

    def capture(*args: Any, **kwargs: Any) -> SharedBanks:
        shared_banks.append(share_banks(*args, **kwargs))
        return shared_banks[-1]

    monkeypatch.setattr(tune, "share_banks", capture)  # the name run_study calls
    created_before = {role: created_in_store(node) for role, node in two_nodes.items()}
    # 1 CPU and half a GPU a trial, 3 CPUs in all: the three trials run at once
    study, trials = run_protonet_study(SPACE, tiny_builtin, tmp_path, gpus_per_trial=0.5)
    assert len(trials) == 3
    head, worker = two_nodes["head"]["NodeID"], two_nodes["worker"]["NodeID"]
    assert Counter(t.data.tags["ray_node"] for t in trials) == {head: 1, worker: 2}
    assert {t.data.tags["data_from"] for t in trials} == {"object store"}
    assert {t.data.tags["ray_gpus"] for t in trials} == {"0"} and {t.data.tags["device"] for t in trials} == {"cpu"}
    # The worker node's two trials held half of its one GPU each, at the same time.
    first, second = (t.info for t in trials if t.data.tags["ray_node"] == worker)
    assert first.start_time < second.end_time and second.start_time < first.end_time

    # Each bank is on both nodes, and each node's store created the banks' bytes once. A second copy of any
    # bank on a node (a pull or a put per trial) would add at least the smallest bank's bytes; the store's
    # other objects (the trials' context, Tune's and Train's own) add about 10 kB.
    (banks,) = shared_banks
    assert len(banks.refs) == 3  # the train, validation (selection) and test (report) splits
    locations = ray.experimental.get_object_locations(list(banks.refs.values()))
    assert all(set(where["node_ids"]) == {head, worker} for where in locations.values())
    sizes = [where["object_size"] for where in locations.values()]
    for role, node in two_nodes.items():
        assert sum(sizes) <= created_in_store(node) - created_before[role] < sum(sizes) + min(sizes)

    # Tune's experiment state and the trials' Ray Train checkpoints are in the shared storage, not on a node.
    assert (shared / "tune" / study.name / "tuner.pkl").is_file()
    # Ray Train keeps one checkpoint a trial (CheckpointConfig(num_to_keep=1)): three trials, three checkpoints.
    checkpoints = [p for p in (shared / "tune" / study.name / "train").glob("trial-*/checkpoint_*") if p.is_dir()]
    assert len(checkpoints) == 3
    assert not (study.folder / "tuner.pkl").exists() and (study.folder / "trials.csv").is_file()


def test_a_sweep_runs_its_variants_at_once_on_both_nodes(
    two_nodes: dict[str, dict[str, Any]], tiny_builtin: Path, tmp_path: Path
) -> None:
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, **{"train.epochs": 1}))
    sweep = load_job("sweep_distance").make_sweep(config)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    table = run_sweep(sweep, tracker, tmp_path)  # 3 CPUs in all: three runs of one CPU at a time
    assert sorted(table.table["distance"]) == ["cosine", "euclidean", "relation", "transformed"]
    parent = tracker.latest("distance", "sweep")
    assert parent is not None
    runs = tracker.children(parent.run_id)
    assert len(runs) == 4 and all(run.status == "FINISHED" for run in runs)
    assert {run.tags["ray_node"] for run in runs} == {two_nodes["head"]["NodeID"], two_nodes["worker"]["NodeID"]}
    assert runs[0].end_time is not None and runs[0].end_time > runs[1].start_time  # the first ones at once
    assert {run.tags["data_from"] for run in runs} == {"object store"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_worker_without_cuda_fails_in_one_line(
    two_nodes: dict[str, dict[str, Any]], tiny_builtin: Path, tmp_path: Path
) -> None:
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, **{"train.device": "auto"}))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.start_run("test", "gpu-without-cuda")
    job = TrainJob(config, "no-cuda", tmp_path / "run", tmp_path / "ray", tracker.uri, run_id, use_gpu=True,
                   max_failures=0)  # fmt: skip
    with pytest.raises(TrainingFailedError, match="torch sees no CUDA device on node"):
        run_training(job)
