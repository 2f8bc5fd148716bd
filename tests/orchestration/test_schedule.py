"""The runs of a sweep go out at once, sized from the cluster, on a real local Ray and a real MLflow store.

The Ray Train run of each is replaced by a stand-in that sleeps (or fails), shipped to Ray like the real one:
what is tested is the scheduling, the MLflow runs it opens and ends, and how it stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import ray

from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration import sweep as sweep_module
from fewshot.orchestration.studies import Variant
from fewshot.orchestration.sweep import Launch, Run, Sizing, plan_runs, train_runs
from fewshot.orchestration.train import TrainJob
from fewshot.tracking.runs import RunRecord, Tracker
from tests.conftest import RayHead

pytestmark = pytest.mark.ray


def test_runs_are_sized_from_the_cluster() -> None:
    cpus = {"CPU": 2}
    assert plan_runs(cpus, 4, Sizing()).concurrent == 2  # one CPU each
    assert plan_runs(cpus, 4, Sizing()).resources_per_worker == {"CPU": 1}
    assert plan_runs(cpus, 1, Sizing()).resources_per_worker == {"CPU": 2}  # one run alone gets them all
    assert plan_runs({"CPU": 16}, 4, Sizing()).resources_per_worker == {"CPU": 4}
    assert plan_runs({"CPU": 16}, 4, Sizing(workers=2)).resources_per_worker == {"CPU": 2}
    assert plan_runs({"CPU": 16}, 4, Sizing(workers=2)).concurrent == 4
    assert plan_runs({"CPU": 16}, 4, Sizing(max_concurrent=3)).concurrent == 3
    assert plan_runs({"CPU": 8}, 9, Sizing(cpus_per_run=3)).concurrent == 2
    gpus = plan_runs({"CPU": 16, "GPU": 4}, 40, Sizing())  # a quarter of a GPU each: 16 at once
    assert (gpus.concurrent, gpus.use_gpu, gpus.resources_per_worker) == (16, True, {"CPU": 1, "GPU": 0.25})
    assert plan_runs({"CPU": 16, "GPU": 2}, 8, Sizing(gpus_per_run=1)).concurrent == 2


def _runs(tmp_path: Path, names: list[str], parent: str) -> list[Run]:
    config = ExperimentConfig()
    return [Run(Variant(name, config, {"distance": name}), tmp_path / name, "distance", parent) for name in names]


def _children(tracker: Tracker, parent: str) -> dict[str, RunRecord]:
    return {run.name: run for run in tracker.children(parent)}


def test_runs_overlap_and_one_failure_loses_no_other(shared_ray: RayHead, tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "sweep")

    def stand_in(job: TrainJob) -> None:  # a Ray Train run that takes a while, or runs out of memory
        time.sleep(3)
        if job.name.startswith("cosine"):
            raise RuntimeError("out of memory")

    names = ["euclidean", "cosine", "relation", "transformed"]
    finished = train_runs(_runs(tmp_path, names, parent), Launch(tracker, tmp_path), stand_in)
    assert finished == [True, False, True, True]
    runs = _children(tracker, parent)
    assert {name: run.status for name, run in runs.items()} == {
        "euclidean": "FINISHED", "cosine": "FAILED", "relation": "FINISHED", "transformed": "FINISHED"
    }  # fmt: skip
    assert runs["cosine"].tags["error"] == "RuntimeError: out of memory"
    spans = sorted((run.start_time, run.end_time) for run in runs.values())
    assert spans[0][1] > spans[1][0]  # the first two ran at the same time (2 CPUs: one each)
    for moment in (start for start, _ in spans):  # never more at once than the cluster holds
        assert sum(start <= moment < end for start, end in spans) <= 2
    assert all((tmp_path / name / sweep_module.RUN_ID_FILE).is_file() for name in names)


def test_a_run_waits_for_the_runs_it_needs_and_never_starts_after_one_failed(
    shared_ray: RayHead, tmp_path: Path
) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "study")

    def stand_in(job: TrainJob) -> None:
        time.sleep(2)
        if job.name.startswith("broken"):
            raise RuntimeError("diverged")

    pretrain, broken, tuned, orphan = _runs(tmp_path, ["pretrain", "broken", "tuned", "orphan"], parent)
    tuned, orphan = replace(tuned, needs=(pretrain.run_dir,)), replace(orphan, needs=(broken.run_dir,))
    # the waiting ones first: a run that waits holds up no other
    finished = train_runs([tuned, orphan, pretrain, broken], Launch(tracker, tmp_path), stand_in)
    assert finished == [True, False, True, False]
    runs = _children(tracker, parent)
    assert runs["tuned"].start_time >= runs["pretrain"].end_time
    assert runs["pretrain"].start_time < runs["broken"].end_time  # the two without needs went out at once
    assert runs["orphan"].status == "FAILED" and "not started: the run it needs failed" in runs["orphan"].tags["error"]
    assert str(broken.run_dir) in runs["orphan"].tags["error"]


def test_ctrl_c_stops_the_runs_in_flight_and_starts_no_other(
    shared_ray: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "sweep")
    pids = tmp_path / "pids"
    pids.mkdir()

    def stand_in(job: TrainJob) -> None:
        (pids / job.name).write_text(str(os.getpid()))
        time.sleep(120)

    wait, calls = ray.wait, []

    def ctrl_c_once_both_run(*args, **kwargs):  # the user's Ctrl-C, once both runs are training
        calls.append(1)
        if len(list(pids.iterdir())) == 2:
            raise KeyboardInterrupt
        return wait(*args, **kwargs)

    monkeypatch.setattr(sweep_module.ray, "wait", ctrl_c_once_both_run)
    launch = Launch(tracker, tmp_path, Sizing(max_concurrent=2))
    with pytest.raises(KeyboardInterrupt):
        train_runs(_runs(tmp_path, ["euclidean", "cosine", "relation"], parent), launch, stand_in)
    runs = _children(tracker, parent)
    assert {name: run.status for name, run in runs.items()} == {"euclidean": "KILLED", "cosine": "KILLED"}
    for pid in (int(path.read_text()) for path in pids.iterdir()):  # their processes are gone
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_local_ray_gives_its_processes_the_local_settings(tmp_path: Path) -> None:
    """A job without a cluster starts its own Ray, whose processes (Train's controller among them) see
    ``LOCAL_RAY_ENV``: here, the controller's poll interval that lets a finished run return at once."""
    probe = (
        "import os, ray\n"
        "from fewshot.orchestration.sweep import connect_ray\n"
        "connect_ray()\n"
        "print(ray.get(ray.remote(lambda: os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S')).remote()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *sweep_module.LOCAL_RAY_ENV)}
    env["RAY_AUTH_MODE"] = "disabled"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == sweep_module.LOCAL_RAY_ENV["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
