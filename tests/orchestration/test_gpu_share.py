"""Several small trials on one GPU through fractional resources, on a local Ray that declares one GPU.

This machine has no CUDA device, so the trials train on the CPU (``train.device=cpu``); what is tested is Ray's
side of the GPU path: :func:`~fewshot.orchestration.study.plan_trials` gives each trial a quarter of the GPU, Ray
places four trials on GPU 0 at the same time, and every run records the GPU it was given; a worker that is
given the GPU and would use it (``train.device=auto``) fails with a one-line error instead of a CUDA crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from ray.train import TrainingFailedError

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.tracking.runs import Tracker
from tests.conftest import tiny_overrides
from tests.orchestration.studies import protonet_space, run_protonet_study

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPACE = protonet_space(samples=4, **{"train.episodes_per_epoch": 8, "model.hidden": 16})


@pytest.fixture
def one_gpu() -> Iterator[None]:
    # Logical resources: 4 CPUs for 4 trial workers, and 1 GPU that Ray hands out in quarters.
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def test_four_trials_share_one_gpu_at_once(
    one_gpu: None, tiny_builtin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trials = run_protonet_study(SPACE, tiny_builtin, tmp_path, gpus_per_trial=0.25)
    assert len(trials) == 4
    assert {t.data.tags["ray_gpus"] for t in trials} == {"0"}  # each got a share of GPU 0
    assert {t.data.tags["device"] for t in trials} == {"cpu"}
    # All four held their quarter at the same time: the last to start began before the first to end finished.
    assert max(t.info.start_time for t in trials) < min(t.info.end_time for t in trials)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_worker_without_cuda_fails_in_one_line(one_gpu: None, tiny_builtin: Path, tmp_path: Path) -> None:
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, **{"train.device": "auto"}))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.start_run("test", "gpu-without-cuda")
    job = TrainJob(config, "no-cuda", tmp_path / "run", tmp_path / "ray", tracker.uri, run_id, use_gpu=True,
                   max_failures=0)  # fmt: skip
    with pytest.raises(TrainingFailedError, match="torch sees no CUDA device on node"):
        run_training(job)
