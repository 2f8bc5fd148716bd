"""A sweep: several configurations (× seeds) trained as Ray Train runs at once, tracked as one MLflow parent
run with a child run each, and summarised in a comparison table logged on the parent.

:func:`train_runs` is the scheduler every study uses: each run is a Ray task that drives one Ray Train run,
sized from the cluster (:func:`plan_runs`), as many in flight as fit. A configuration that fails is recorded
(child run FAILED with its error) and left out of the table; the others go on. Ctrl-C stops the runs in
flight and ends them and the parent as KILLED.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from ray.exceptions import RayTaskError

from fewshot.atomic import fresh_folder, owned, write_text_atomic
from fewshot.config.loading import flatten, to_yaml
from fewshot.config.schema import DataConfig
from fewshot.data.tables import FEWSHOT_DIRS
from fewshot.errors import FewshotError
from fewshot.orchestration.shared import BankKey, SharedBanks, share_banks
from fewshot.orchestration.studies import Sweep, Variant
from fewshot.orchestration.study import TrialPlan, plan_trials
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.paths import ray_storage
from fewshot.tracking.runs import PARENT_TAG, Tracker
from fewshot.tracking.tables import GROUP_TAG, Comparison, publish, register_best, sweep_table

log = logging.getLogger(__name__)


# A local Ray's settings, inherited by its processes. Train's controller polls its workers every 2 s by default,
# so a run waits up to that long at each step of its start and end; on a laptop that is a good part of a short
# run. Each poll is one remote call per worker.
LOCAL_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


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
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)
    ray.init(address="local", dashboard_port=port)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Sizing:
    """How big each Ray Train run is and how many train at once (default: as many as the cluster holds)."""

    workers: int = 1  # data-parallel Ray Train workers per run
    gpus_per_run: float | None = None  # default on a GPU cluster: a quarter of a GPU a worker
    cpus_per_run: int | None = None  # default: the cluster's CPUs shared between the runs in flight
    max_concurrent: int | None = None


AS_MANY_AS_FIT = Sizing()


@dataclass(frozen=True)
class Launch:
    """What every run of a scheduling round shares: the MLflow store, the results folder, the runs' size, the
    decoded data they read."""

    tracker: Tracker
    results: Path
    sizing: Sizing = AS_MANY_AS_FIT
    banks: SharedBanks | None = None  # decoded splits in the object store, read by every run


@dataclass(frozen=True)
class Run:
    """One Ray Train run to make: a variant, its folder, the MLflow experiment (``study``) and parent run it is
    tracked in, its name's prefix, the MLflow run it continues, and the runs (by folder) of the same round that
    must finish first (a fine-tuning waits for the pre-training whose backbone it starts from)."""

    variant: Variant
    run_dir: Path
    study: str
    parent: str | None = None
    prefix: str = ""
    resume_run: str | None = None
    needs: tuple[Path, ...] = ()


RUN_ID_FILE = "mlflow-run-id"  # in a run folder: the MLflow run its training logs into
Trainer = Callable[[TrainJob], object]


def run_sweep(
    sweep: Sweep, tracker: Tracker, results: Path, sizing: Sizing = AS_MANY_AS_FIT, resume: bool = False
) -> Comparison:
    """:func:`run_sweeps` of one sweep."""
    return run_sweeps([sweep], tracker, results, sizing, resume)[0]


def run_sweeps(
    sweeps: Sequence[Sweep], tracker: Tracker, results: Path, sizing: Sizing = AS_MANY_AS_FIT, resume: bool = False
) -> list[Comparison]:
    """Train the variants of every sweep into ``results/<study>/``, all of them scheduled together, as many at
    once as the cluster holds; returns each sweep's comparison table (also logged on its parent run). With
    ``resume``, continue the latest sweep of each name instead: finished variants are kept, interrupted ones
    continue from their checkpoints in their own MLflow runs."""
    for sweep in sweeps:
        sweep.check_data()
    with ExitStack() as parents:
        opened = [_open_sweep(sweep, tracker, results, resume, parents) for sweep in sweeps]
        connect_ray()
        runs = [run for _, _, sweep_runs in opened for run in sweep_runs]
        if runs:
            train_runs(runs, Launch(tracker, results, sizing, share_all(run.variant.config.data for run in runs)))
        return [
            _publish(sweep, tracker, parent, folder) for sweep, (parent, folder, _) in zip(sweeps, opened, strict=True)
        ]


def _open_sweep(
    sweep: Sweep, tracker: Tracker, results: Path, resume: bool, parents: ExitStack
) -> tuple[str, Path, list[Run]]:
    """The sweep's parent run (new, or reopened to resume), its folder, and the runs it has left to train."""
    parent, folder, resumed = open_parent(tracker, sweep.study, sweep.name, sweep.group_by, results, resume, parents)
    runs = [Run(v, folder / slug(v.name), sweep.study, parent, sweep.name) for v in sweep.variants]
    return parent, folder, unfinished(runs, tracker) if resumed else runs


def open_parent(
    tracker: Tracker, study: str, name: str, group_by: str, results: Path, resume: bool, parents: ExitStack
) -> tuple[str, Path, bool]:
    """The parent MLflow run of a sweep ``name`` and the hold on its results folder (both entered into
    ``parents``, so they end as the block does), the folder, and whether it is the latest such sweep reopened
    (``resume``) rather than a new one."""
    earlier = tracker.latest(study, "sweep", name) if resume else None
    if resume and (earlier is None or "results_dir" not in earlier.tags):
        raise FewshotError(f"no {name} to resume in {tracker.uri}; run it without --resume")
    if earlier is not None:
        folder = Path(earlier.tags["results_dir"])
        log.info("resuming %s in %s (MLflow run %s)", name, folder, earlier.run_id)
    else:  # two sweeps started in the same second get folders of their own
        folder = fresh_folder(results / study / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    parents.enter_context(owned(folder))  # one driver per sweep folder: a second --resume of it is an error
    tags, resumed = {"sweep": name, GROUP_TAG: group_by}, earlier.run_id if earlier else None
    parent = parents.enter_context(tracker.run(study, name, tags=tags, resume=resumed))
    tracker.set_tags(parent, {"results_dir": folder})
    return parent, folder, earlier is not None


def _publish(sweep: Sweep, tracker: Tracker, parent: str, folder: Path) -> Comparison:
    table = sweep_table(tracker, parent, sweep.group_by)
    if table.empty:
        raise FewshotError(f"every run of sweep {sweep.name!r} failed; see the child runs' 'error' tags")
    comparison = publish(tracker, parent, table, sweep.group_by, sweep.title, folder)
    register_best(tracker, parent, sweep.study)
    return comparison


def unfinished(runs: Sequence[Run], tracker: Tracker) -> list[Run]:
    """The runs left to train when a sweep resumes: a finished run is kept; one that started continues in its
    own MLflow run (from its ``last.pt`` if it has one). A run folder of another config is an error."""
    left = []
    for run in runs:
        written = run.run_dir / "config.yaml"
        if written.is_file() and written.read_text() != to_yaml(run.variant.config):
            raise FewshotError(
                f"{run.run_dir} was trained with another config than {run.variant.name} has now; "
                "start a new sweep (without --resume) to train this one"
            )
        id_file = run.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        if run_id is None or not tracker.exists(run_id):
            left.append(run)
        elif tracker.get(run_id).status != "FINISHED":
            left.append(replace(run, resume_run=run_id))
        else:
            log.info("%s already finished (MLflow run %s)", run.variant.name, run_id)
    return left


def share_all(datasets: Iterable[DataConfig], dirs: tuple[str, ...] = FEWSHOT_DIRS) -> SharedBanks:
    """The splits of every distinct dataset (:func:`share_banks`), decoded once into the object store."""
    refs: dict[BankKey, ray.ObjectRef] = {}
    digests: dict[BankKey, str] = {}
    for data in dict.fromkeys(datasets):
        shared = share_banks(data, dirs=dirs)
        refs, digests = refs | shared.refs, digests | shared.digests
    return SharedBanks(refs, digests)


def plan_runs(cluster: dict[str, float], runs: int, sizing: Sizing) -> TrialPlan:
    """Size ``runs`` Ray Train runs like Tune's trials (a fraction of a GPU, or CPUs); ``concurrent`` counts
    runs. On CPUs the runs in flight share the cluster's CPUs by default: one run alone gets them all."""
    workers = sizing.workers
    if sizing.cpus_per_run is not None:
        per_worker: int | None = max(1, sizing.cpus_per_run // workers)
    elif not cluster.get("GPU"):  # every worker in flight gets an equal share of the CPUs
        total = max(1, int(cluster.get("CPU", 1)))
        per_worker = max(1, total // min(runs * workers, total))
    else:
        per_worker = None  # plan_trials shares the CPUs between the GPU runs
    plan = plan_trials(cluster, runs * workers, sizing.gpus_per_run, per_worker)
    concurrent = max(1, plan.concurrent // workers)
    return replace(plan, concurrent=min(concurrent, sizing.max_concurrent or concurrent))


def train_runs(runs: Sequence[Run], launch: Launch, trainer: Trainer = run_training) -> list[bool]:
    """Train every run as its own Ray Train run, as many at once as :func:`plan_runs` allows, the next one
    starting as soon as one ends (a run whose ``needs`` are still training waits for them); returns whether
    each finished. Progress: a line per run started and ended, with the count done and an ETA.

    A run's MLflow run opens when it starts. A failure is logged and recorded on its run (FAILED, with its
    error), not raised: one failed configuration must not lose the others; a run that needs a failed one is
    recorded FAILED without training. Ctrl-C (or an error of the scheduler itself) stops the runs in flight and
    ends their MLflow runs KILLED before it propagates.
    """
    connect_ray()
    plan = plan_runs(ray.cluster_resources(), len(runs), launch.sizing)
    if len(runs) > 1:
        log.info("%d runs, %d at a time, each worker %s", len(runs), plan.concurrent, plan.resources_per_worker)
    waiting, flying = list(enumerate(runs)), dict[ray.ObjectRef, tuple[int, str, float]]()
    finished, failed = [False] * len(runs), set[Path]()
    progress = _Progress(len(runs), plan.concurrent)
    try:
        while waiting or flying:
            pending = {runs[i].run_dir for i, _ in waiting} | {runs[i].run_dir for i, _, _ in flying.values()}
            for index, run in list(waiting):
                if len(flying) >= plan.concurrent:
                    break
                if failed.intersection(run.needs):
                    waiting.remove((index, run))
                    failed.add(run.run_dir)
                    _skip(run, launch, [need for need in run.needs if need in failed])
                    progress.ended(run.variant.name, "not started: a run it needs failed", len(waiting) + len(flying))
                elif not pending.intersection(run.needs):
                    waiting.remove((index, run))
                    run_id = _open_run(run, launch)
                    job = _train.remote(trainer, _train_job(run, launch, plan, run_id))
                    flying[job] = (index, run_id, time.monotonic())
                    log.info("[%d/%d] started %s", index + 1, len(runs), run.variant.name)
            ready, _ = ray.wait(list(flying), num_returns=1, timeout=1.0)
            for ref in ready:
                index, run_id, began = flying.pop(ref)
                finished[index] = _close_run(ref, run_id, runs[index].variant.name, launch.tracker)
                if not finished[index]:
                    failed.add(runs[index].run_dir)
                outcome = "finished" if finished[index] else "failed"
                progress.ended(runs[index].variant.name, outcome, len(waiting) + len(flying), time.monotonic() - began)
    except BaseException as err:
        for ref, (_, run_id, _) in flying.items():
            ray.cancel(ref, force=True)  # its process ends, and the Ray Train run it drives with it
            launch.tracker.finish(run_id, err)
        raise
    return finished


@dataclass
class _Progress:
    """The log line of each run that ends: how many are done of how many, and when the rest should be."""

    total: int
    concurrent: int
    done: int = 0
    took: list[float] = field(default_factory=list)  # seconds, of each run that trained

    def ended(self, name: str, outcome: str, left: int, seconds: float | None = None) -> None:
        """``name`` ended (after ``seconds`` of training, if it trained), ``left`` runs still to end."""
        self.done += 1
        if seconds is not None:
            self.took.append(seconds)
            outcome += f" in {_minutes(seconds)}"
        eta = ""
        if self.took and left:  # the runs left, as many at a time as fit, at the mean run's time
            eta = f"; about {_minutes(left * sum(self.took) / len(self.took) / min(self.concurrent, left))} left"
        log.info("[%d/%d] %s %s%s", self.done, self.total, name, outcome, eta)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _skip(run: Run, launch: Launch, failed: Sequence[Path]) -> None:
    """Record a run that cannot start because a run it needs failed: its MLflow run ends FAILED, saying why."""
    run_id = _open_run(run, launch)
    needs = ", ".join(str(path) for path in failed)
    launch.tracker.finish(run_id, FewshotError(f"not started: the run it needs failed ({needs})"))


@ray.remote(num_cpus=0, max_retries=0)
def _train(trainer: Trainer, job: TrainJob) -> None:
    """A run's driver: waits on its Ray Train run (whose workers hold the resources) wherever Ray places it."""
    trainer(job)


def _open_run(run: Run, launch: Launch) -> str:
    """Start the run's MLflow run (or reopen the one it continues) with its params and tags."""
    tracker, config = launch.tracker, run.variant.config
    method = getattr(config, "method", None)
    tags = {**({"method": method} if method else {}), "seed": config.seed, **run.variant.tags}
    if run.resume_run is not None:
        run_id = run.resume_run
        tracker.reopen(run_id)
        if run.parent is not None:
            tracker.set_tags(run_id, {PARENT_TAG: run.parent})
    else:
        run_id = tracker.start_run(run.study, run.variant.name, run.parent, tags)
    write_text_atomic(run.run_dir / RUN_ID_FILE, run_id + "\n")
    tracker.log_params(run_id, flatten(config))
    return run_id


def _train_job(run: Run, launch: Launch, plan: TrialPlan, run_id: str) -> TrainJob:
    attempt = time.strftime("%H%M%S") if run.resume_run is not None else ""  # a fresh Ray Train folder
    name = "-".join(part for part in (run.prefix, slug(run.variant.name), run_id[:8], attempt) if part)
    storage = ray_storage(run.run_dir.parent / "ray", launch.results)
    return TrainJob(
        run.variant.config,
        name,
        run.run_dir,
        storage,
        launch.tracker.uri,
        run_id,
        num_workers=launch.sizing.workers,
        use_gpu=plan.use_gpu,
        resources_per_worker=plan.resources_per_worker,
        banks=launch.banks,
    )


def _close_run(ref: ray.ObjectRef, run_id: str, name: str, tracker: Tracker) -> bool:
    """End a run's MLflow run as its task ended: FINISHED, or FAILED with its error."""
    try:
        ray.get(ref)
    except Exception as err:
        cause = err.cause if isinstance(err, RayTaskError) and err.cause is not None else err
        log.error("%s failed: %s", name, cause)
        tracker.finish(run_id, cause)
        return False
    tracker.finish(run_id)
    return True


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
