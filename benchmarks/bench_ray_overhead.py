"""Ray Train overhead: one epoch of the same ProtoNet training in-process and in a 1-worker TorchTrainer.

    python benchmarks/bench_ray_overhead.py [--episodes 100]

Ray is started first and not timed (cluster start). Prints each side's training episodes/s (measured by the
loop itself), whole-run wall time (the Ray side includes starting its worker group) and the CPU time the whole
machine spent meanwhile (every process: Train's controller, its helper actors and its worker, not only this
one), and the overheads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
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

    start, cpu = time.perf_counter(), _machine_cpu()
    local = run(config, work / "local")
    local_wall, local_cpu = time.perf_counter() - start, _machine_cpu() - cpu

    ray.init()
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}")
    run_id = tracker.start_run("bench", "ray")
    job = TrainJob(config, "bench-ray", work / "ray-run", work / "ray", tracker.uri, run_id)
    start, cpu = time.perf_counter(), _machine_cpu()
    result = run_training(job)
    ray_wall, ray_cpu = time.perf_counter() - start, _machine_cpu() - cpu
    ray.shutdown()

    local_rate = local.fit.history[-1]["episodes_per_s"]
    assert result.metrics is not None, "the Ray run reported no epoch"
    ray_rate = result.metrics["episodes_per_s"]
    print(f"in-process: {local_rate:.2f} episodes/s, run {local_wall:.1f}s, machine CPU {local_cpu:.1f}s "
          f"({args.episodes} episodes + evaluation)")  # fmt: skip
    print(f"Ray Train:  {ray_rate:.2f} episodes/s, run {ray_wall:.1f}s, machine CPU {ray_cpu:.1f}s "
          "(worker group start included)")  # fmt: skip
    print(f"training-loop overhead in Ray: {100 * (local_rate / ray_rate - 1):+.1f}%  (target <= 10%)")
    print(f"whole-run overhead in Ray:     {100 * (ray_wall / local_wall - 1):+.1f}%")
    print(f"CPU a Ray Train run adds:      {ray_cpu - local_cpu:.1f}s (its processes, imports, MLflow logging)")


def _machine_cpu() -> float:
    """CPU seconds every process on this machine has used (user, nice and system time)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system


if __name__ == "__main__":
    main()
