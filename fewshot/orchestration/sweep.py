"""A sweep: several configurations (× seeds) trained as Ray Train runs, tracked as one MLflow parent run
with a child run each, and summarised in a comparison table logged on the parent.

A configuration that fails is recorded (child run FAILED with its error) and left out of the table; the
sweep goes on with the others. Ctrl-C ends the current child and the parent as KILLED.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray

from fewshot.atomic import write_text_atomic
from fewshot.config.loading import flatten
from fewshot.config.schema import ExperimentConfig, TrainedConfig
from fewshot.data.splits import check_splits
from fewshot.errors import FewshotError
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.paths import ray_storage
from fewshot.tracking.runs import PARENT_TAG, Tracker
from fewshot.tracking.tables import GROUP_TAG, Comparison, compare, gather_runs, publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One configuration of a sweep, its name and the MLflow tags that tell it apart (``distance``...)."""

    name: str
    config: TrainedConfig
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """Variants compared in one table: the MLflow experiment (``study``) and parent run (``name``) they are
    tracked in, and the tag (``group_by``) whose values are the table's rows."""

    study: str
    name: str
    group_by: str
    title: str
    variants: Sequence[Variant]

    def seeded(self, seeds: int) -> Sweep:
        """Each variant once per seed ``0..seeds-1`` (named ``<name>/seed<k>`` when there are several)."""
        variants = [
            Variant(f"{v.name}/seed{seed}" if seeds > 1 else v.name, v.config.model_copy(update={"seed": seed}), v.tags)
            for v in self.variants
            for seed in range(seeds)
        ]
        return replace(self, variants=variants)

    def check_data(self) -> None:
        """Read and check each dataset the variants train on (one line for a mistake, before Ray starts)."""
        for config in {variant.config.data: variant.config for variant in self.variants}.values():
            check_splits(config.data, config.train_episode if isinstance(config, ExperimentConfig) else None)


def connect_ray() -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it; ``auto`` finds a ``ray start``
    cluster), else start a private local Ray — never a stale cluster some earlier ``ray start`` left behind."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return
    # Ray's own helpers (Train's placement-group cleaner) find "the" cluster through the state API; with two
    # local Rays on one machine they cannot tell which, and leak the resources of finished runs. Name ours:
    # its processes inherit this variable.
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(address="local", dashboard_port=port)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_sweep(sweep: Sweep, tracker: Tracker, results: Path, num_workers: int = 1) -> Comparison:
    """Train every variant in turn into ``results/<study>/``; returns the comparison table (also logged on the
    parent run)."""
    sweep.check_data()
    connect_ray()
    sweep_dir = results / sweep.study / f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracker.run(sweep.study, sweep.name, tags={"sweep": sweep.name, GROUP_TAG: sweep.group_by}) as parent:
        tracker.set_tags(parent, {"results_dir": sweep_dir})
        launch = Launch(tracker, results, sweep.study, parent, num_workers)
        for index, variant in enumerate(sweep.variants, 1):
            log.info("[%d/%d] %s", index, len(sweep.variants), variant.name)
            run_variant(variant, sweep_dir / slug(variant.name), launch, prefix=sweep.name)
        table = compare(gather_runs(tracker, parent), sweep.group_by)
        if table.empty:
            raise FewshotError(f"every run of sweep {sweep.name!r} failed; see the child runs' 'error' tags")
        return publish(tracker, parent, table, sweep.group_by, sweep.title, sweep_dir)


@dataclass(frozen=True)
class Launch:
    """What every run of a study shares: the MLflow store and experiment (``study``) it is tracked in, as a
    child of ``parent`` if given; the results folder it is kept in; the Ray Train workers it trains on."""

    tracker: Tracker
    results: Path
    study: str
    parent: str | None = None
    num_workers: int = 1


RUN_ID_FILE = "mlflow-run-id"  # in a run folder: the MLflow run its training logs into


def run_variant(
    variant: Variant, run_dir: Path, launch: Launch, prefix: str = "", resume_run: str | None = None
) -> bool:
    """Train ``variant`` as one Ray Train run (named ``<prefix>-<variant>-<run id>``) into ``run_dir``, tracked as
    ``launch`` says, or in MLflow run ``resume_run`` again when it continues an interrupted training; returns
    whether it finished. A failure is logged and recorded on the run (FAILED, with its error), not raised: one
    failed configuration must not lose the others."""
    tracker, parent = launch.tracker, launch.parent
    method = getattr(variant.config, "method", None)
    tags = {**({"method": method} if method else {}), "seed": variant.config.seed, **variant.tags}
    if resume_run is not None:
        run_id = resume_run
        tracker.reopen(run_id)
        if parent is not None:
            tracker.set_tags(run_id, {PARENT_TAG: parent})
    else:
        run_id = tracker.start_run(launch.study, variant.name, parent, tags)
    write_text_atomic(run_dir / RUN_ID_FILE, run_id + "\n")
    try:
        tracker.log_params(run_id, flatten(variant.config))
        attempt = time.strftime("%H%M%S") if resume_run is not None else ""  # a fresh Ray Train folder
        name = "-".join(part for part in (prefix, slug(variant.name), run_id[:8], attempt) if part)
        storage = ray_storage(run_dir.parent / "ray", launch.results)
        job = TrainJob(variant.config, name, run_dir, storage, tracker.uri, run_id, launch.num_workers)
        run_training(job)
    except Exception as err:
        log.error("%s failed: %s", variant.name, err)
        tracker.finish(run_id, err)
        return False
    except BaseException as err:  # Ctrl-C (Ray's trainer turns SIGINT into SystemExit): end the run, stop
        tracker.finish(run_id, err)
        raise
    tracker.finish(run_id)
    return True


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
