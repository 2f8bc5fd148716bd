"""A sweep's runs one at a time against all at once: the four-variant distance sweep at the quick settings.

    python benchmarks/bench_sweep.py [--epochs 5] [--episodes 60]

One local Ray (started first, not timed) and one process. The serial side is how sweeps ran before: one run
at a time holding every CPU (``Sizing(max_concurrent=1, cpus_per_run=<all>)``); the concurrent side is the
default (the runs share the CPUs, as many in flight as fit). Both train the same four configs on the built-in
data into their own MLflow store. Prints each wall time and their ratio (target: concurrent ≤ 0.6× serial on
the 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import runpy
import tempfile
import time
from pathlib import Path

import ray

from fewshot.cli import QUICK
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.data.splits import check_splits
from fewshot.orchestration.sweep import Sizing, connect_ray, run_sweep
from fewshot.tracking.runs import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=60)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides = [*QUICK, f"train.epochs={args.epochs}", f"train.episodes_per_epoch={args.episodes}"]
    job = runpy.run_path(str(Path(__file__).parents[1] / "jobs" / "sweep_distance.py"))
    sweep = job["make_sweep"](load_config(ExperimentConfig, None, overrides))
    check_splits(sweep.variants[0].config.data)  # generates the built-in data outside the timings
    connect_ray()
    cpus = int(ray.cluster_resources()["CPU"])
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    walls = {}
    for side, sizing in (("serial", Sizing(cpus_per_run=cpus, max_concurrent=1)), ("concurrent", Sizing())):
        start = time.perf_counter()
        table = run_sweep(sweep, Tracker(f"sqlite:///{work / side / 'mlflow.db'}"), work / side, sizing)
        walls[side] = time.perf_counter() - start
        print(f"{side:>10}: {walls[side]:6.1f} s  ({len(table.table)} of {len(sweep.variants)} variants, {cpus} CPUs)")
    ratio = walls["concurrent"] / walls["serial"]
    print(f"concurrent / serial: {ratio:.2f}  (target <= 0.60)")


if __name__ == "__main__":
    main()
