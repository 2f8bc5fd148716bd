"""Ray Train overhead: one epoch of the same ProtoNet training in-process and in a 1-worker TorchTrainer.

    python benchmarks/bench_ray_overhead.py [--episodes 100]

Ray is started first and not timed (cluster start). Prints each side's training episodes/s (measured by the
loop itself), whole-run wall time (the Ray side includes starting its worker group) and the CPU time the whole
machine spent meanwhile (every process: Train's controller, its helper actors and its worker, not only this
one), and the overheads, then the CPU time each process used during the Ray run (its worker, Train's controller
and helper actors, this driver).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
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
    with ProcessSampler() as sampler:
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
    print("CPU of each process during the Ray Train run:")
    for name, seconds in sampler.busiest():
        print(f"  {seconds:6.1f}s  {name}")


class ProcessSampler:
    """Samples the CPU time of every process while it is open (10 times a second: a process's last sample before
    it exits is what it is credited with), less what each had used before, by process title (Ray names its actors
    ``ray::Name``; a Ray worker that was idle before the run counts too)."""

    def __init__(self) -> None:
        self.cpu: dict[int, tuple[str, float]] = {}
        self._before = {pid: seconds for pid, (_, seconds) in self._snapshot().items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _snapshot() -> dict[int, tuple[str, float]]:
        seen = {}
        for process in psutil.process_iter(["pid", "name", "cpu_times"]):
            times = process.info["cpu_times"]
            if times is not None:
                seen[process.info["pid"]] = (process.info["name"], times.user + times.system)
        return seen

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            for pid, (name, seconds) in self._snapshot().items():
                self.cpu[pid] = (name, seconds - self._before.get(pid, 0.0))

    def busiest(self, at_least: float = 0.5) -> list[tuple[str, float]]:
        rows = sorted(self.cpu.values(), key=lambda row: -row[1])
        return [row for row in rows if row[1] >= at_least]


def _machine_cpu() -> float:
    """CPU seconds every process on this machine has used (user, nice and system time)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system


if __name__ == "__main__":
    main()
