"""Ray Train overhead: one epoch of the same ProtoNet training in-process and in a 1-worker TorchTrainer.

    python benchmarks/bench_ray_overhead.py [--episodes 100]

Ray is started first and not timed (cluster start). Prints each side's training episodes/s (measured by the
loop itself) and whole-run wall time (the Ray side includes starting its worker group), and the overheads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.tracking.runs import Tracker
from fewshot.training.run import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    overrides = ["train.epochs=1", f"train.episodes_per_epoch={args.episodes}", "train.val_episodes=50",
                 "data.n_val_episodes=100", "train.device=cpu"]  # fmt: skip
    config = load_config(ExperimentConfig, None, overrides)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    run(config, work / "warmup")  # builds the dataset and caches outside the timings

    start = time.perf_counter()
    local = run(config, work / "local")
    local_wall = time.perf_counter() - start

    ray.init()
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}")
    run_id = tracker.start_run("bench", "ray")
    job = TrainJob(config, "bench-ray", work / "ray-run", work / "ray", tracker.uri, run_id)
    start = time.perf_counter()
    result = run_training(job)
    ray_wall = time.perf_counter() - start
    ray.shutdown()

    local_rate = local.fit.history[-1]["episodes_per_s"]
    assert result.metrics is not None, "the Ray run reported no epoch"
    ray_rate = result.metrics["episodes_per_s"]
    print(f"in-process: {local_rate:.2f} episodes/s, run {local_wall:.1f}s ({args.episodes} episodes + evaluation)")
    print(f"Ray Train:  {ray_rate:.2f} episodes/s, run {ray_wall:.1f}s (worker group start included)")
    print(f"training-loop overhead in Ray: {100 * (local_rate / ray_rate - 1):+.1f}%  (target <= 10%)")
    print(f"whole-run overhead in Ray:     {100 * (ray_wall / local_wall - 1):+.1f}%")


if __name__ == "__main__":
    main()
