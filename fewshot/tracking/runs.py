"""MLflow runs through the plain client, so the same code works in a driver, a Ray worker or a test.

The only package that talks to MLflow: others create, log to and query runs through :class:`Tracker`.
Conventions: one experiment per study; a sweep is a parent run, each configuration a child run tagged with
what distinguishes it and holding the resolved config as params. Every run ends FINISHED or FAILED (with the
error as a tag), never left RUNNING. Tracking URIs are made absolute, since Ray jobs and trials change the
working directory.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from torch import nn

import fewshot
from fewshot.data.cache import ImageBank
from fewshot.errors import FewshotError
from fewshot.paths import absolute_uri

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
MODEL_TAG = "model_id"  # on a run: the MLflow logged model of its best checkpoint
MAX_PARAM_LENGTH = 6000


COMMIT_ENV, USER_ENV = "FEWSHOT_GIT_COMMIT", "FEWSHOT_USER"  # set by jobs/submit.py for a Ray job's copy
SYSTEM_METRICS_INTERVAL = 5.0  # seconds between samples of a training run's CPU, memory and GPU use


@lru_cache(maxsize=1)
def source_tags() -> dict[str, str]:
    """MLflow's own source tags for a run started here: the commit (``$FEWSHOT_GIT_COMMIT``, which
    ``jobs/submit.py`` passes to a Ray job, whose copy of the code has no ``.git``; else this checkout's HEAD),
    the user (``$FEWSHOT_USER``, else this process's) and the entry point; ``git_sha`` is the short commit."""
    commit = os.environ.get(COMMIT_ENV) or _git_head()
    tags = {"mlflow.user": os.environ.get(USER_ENV) or _user(), "mlflow.source.type": "JOB"}
    tags["mlflow.source.name"] = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return {**tags, "git_sha": commit[:7] if commit else "unknown"}


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


@dataclass(frozen=True)
class RunRecord:
    """What fewshot reads back of an MLflow run."""

    run_id: str
    name: str
    experiment: str  # its name
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each
    start_time: int  # ms since the epoch
    end_time: int | None


class Tracker:
    """Creates experiments and runs in one MLflow store, logs to them by run id, and reads them back."""

    def __init__(self, uri: str) -> None:
        self.uri = absolute_uri(uri)
        self._experiment_names: dict[str, str] = {}

    @cached_property
    def _client(self) -> MlflowClient:
        """The store is opened (a SQLite file created) on first use: a job that fails its checks leaves none."""
        return MlflowClient(self.uri)

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created on first use with an absolute artifact location."""
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self._client.create_experiment(name, artifact_location=self._artifact_root(name))

    def start_run(self, study: str, name: str, parent: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
        """Create a RUNNING run in experiment ``study`` (a child of ``parent`` if given); returns its id."""
        all_tags = {**source_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
        if parent is not None:
            all_tags[PARENT_TAG] = parent
        return self._client.create_run(self.experiment(study), tags=all_tags, run_name=name).info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self._client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_datasets(self, run_id: str, banks: Sequence[tuple[str, ImageBank]]) -> None:
        """Log the decoded splits a run used as MLflow dataset inputs, each with its role (``train``,
        ``selection``, ``report``) as ``mlflow.data.context``, its content hash as digest and its image table
        as source: the UI shows which data made a number, and runs on other data are told apart."""
        inputs = [
            DatasetInput(
                Dataset(
                    name=f"{Path(bank.source).parent.name}/{Path(bank.source).stem}",
                    digest=bank.digest[:36] or "unknown",
                    source_type="local",
                    source=json.dumps({"uri": bank.source}),
                    profile=json.dumps(
                        {"images": len(bank), "classes": len(bank.classes), "image_size": bank.images.shape[-1]}
                    ),
                ),
                [InputTag("mlflow.data.context", role)],
            )
            for role, bank in banks
        ]
        self._client.log_inputs(run_id, datasets=inputs)

    def log_model(self, run_id: str, model: nn.Module, input_example: np.ndarray) -> str:
        """Log ``model`` as an MLflow PyTorch model of run ``run_id`` (its code beside it, so it loads wherever
        torch does; its signature from ``input_example``); returns the model id, also tagged on the run."""
        # the installed distributions' versions, as an installer names them (not ``__version__``'s "+cu130" build tag)
        requirements = [f"{name}=={metadata.version(name)}" for name in ("torch", "torchvision")]
        run = self._client.get_run(run_id)
        with using_tracking_uri(self.uri):
            # Created here in the run's own experiment: left to the flavour, a model of a run that is not the
            # process's active run goes to the Default experiment, its files to ./mlruns of the current folder.
            logged = mlflow.initialize_logged_model(
                name="model", source_run_id=run_id, params=run.data.params, experiment_id=run.info.experiment_id
            )
            info = _pytorch_flavour().log_model(
                model,
                name="model",
                run_id=run_id,
                model_id=logged.model_id,
                input_example=input_example,
                # not MLflow's default torch.export: AFHN's training stage is a data-dependent branch it cannot
                # trace; the pickle loads with fewshot's code, which travels with the model (code_paths)
                serialization_format="pickle",
                pip_requirements=requirements,
                code_paths=[str(Path(fewshot.__file__).parent)],
            )
        self.set_tags(run_id, {MODEL_TAG: info.model_id})
        return str(info.model_id)

    def register_model(self, run_id: str, name: str) -> int | None:
        """Register run ``run_id``'s logged model (see :meth:`log_model`) as a new version of ``name`` in the
        Model Registry; returns the version, or None if the run logged no model."""
        model_id = self.get(run_id).tags.get(MODEL_TAG)
        if model_id is None:
            return None
        with using_tracking_uri(self.uri):
            version = mlflow.register_model(f"models:/{model_id}", name, tags={"run_id": run_id})
        return int(version.version)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self._client.log_artifact(run_id, str(path), folder)

    def finish(self, run_id: str, error: BaseException | None = None) -> None:
        """End a run: FINISHED, or FAILED with the error recorded (KILLED when interrupted or exited)."""
        if error is None:
            self._client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
            return
        interrupted = isinstance(error, KeyboardInterrupt | SystemExit)  # Ray turns SIGINT into SystemExit
        status = RunStatus.KILLED if interrupted else RunStatus.FAILED
        self.set_tags(run_id, {"error": f"{type(error).__name__}: {error}"[:5000]})
        self._client.set_terminated(run_id, RunStatus.to_string(status))

    @contextmanager
    def run(
        self,
        study: str,
        name: str,
        parent: str | None = None,
        tags: Mapping[str, Any] | None = None,
        resume: str | None = None,
    ) -> Iterator[str]:
        """``with tracker.run(...) as run_id:`` — the run (or run ``resume``, reopened) ends FINISHED, or
        FAILED/KILLED if the block raises."""
        run_id = resume or self.start_run(study, name, parent, tags)
        if resume:
            self.reopen(resume)
        try:
            yield run_id
        except BaseException as err:
            self.finish(run_id, err)
            raise
        self.finish(run_id)

    def get(self, run_id: str) -> RunRecord:
        return self._record(self._client.get_run(run_id))

    def exists(self, run_id: str) -> bool:
        """Whether this store holds run ``run_id`` (a run id from another store, or a deleted run, it does not)."""
        try:
            self._client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def children(self, parent: str) -> list[RunRecord]:
        """The child runs of ``parent``, oldest first."""
        experiment = self._client.get_run(parent).info.experiment_id
        runs = self._client.search_runs(
            [experiment], filter_string=f"tags.{PARENT_TAG} = '{parent}'", order_by=["attributes.start_time ASC"]
        )
        return [self._record(run) for run in runs]

    def latest(self, experiment: str, tag: str, value: str | None = None) -> RunRecord | None:
        """The most recently started run of ``experiment`` that has ``tag`` (equal to ``value`` if given), e.g. a
        sweep's parent run."""
        found = self._client.get_experiment_by_name(experiment)
        if found is None:
            return None
        where = f"tags.{tag} = '{value}'" if value is not None else f"tags.{tag} != ''"
        runs = self._client.search_runs(
            [found.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1
        )
        return self._record(runs[0]) if runs else None

    def find(self, experiment: str, tag: str, value: str) -> list[RunRecord]:
        """The runs of ``experiment`` whose ``tag`` is ``value``, newest first (none if there is no such
        experiment)."""
        found = self._client.get_experiment_by_name(experiment)
        if found is None:
            return []
        where = f"tags.{tag} = '{value}'"
        runs = self._client.search_runs([found.experiment_id], where, order_by=["attributes.start_time DESC"])
        return [self._record(run) for run in runs]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every value of metric ``key`` in the order they were logged."""
        metrics = sorted(self._client.get_metric_history(run_id, key), key=lambda m: m.timestamp)
        return [(m.step, m.value) for m in metrics]

    def last_step(self, run_id: str, key: str = "loss") -> int:
        """The last step (epoch) at which ``key`` was logged; 0 if it never was."""
        return max((step for step, _ in self.history(run_id, key)), default=0)

    def find_child(self, parent: str, tag: str, value: str) -> str | None:
        """The id of ``parent``'s child run tagged ``tag=value`` (e.g. a Tune trial id), if there is one."""
        for run in self.children(parent):
            if run.tags.get(tag) == value:
                return run.run_id
        return None

    def artifact(self, run_id: str, path: str, folder: Path) -> Path | None:
        """Download artifact ``path`` of run ``run_id`` into ``folder``; None if the run has no such artifact."""
        if path not in {entry.path for entry in self._client.list_artifacts(run_id)}:
            return None
        return Path(self._client.download_artifacts(run_id, path, str(folder)))

    def reopen(self, run_id: str) -> None:
        """Mark an ended run RUNNING again: a resumed trial or study continues in its own run."""
        self._client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if "error" in self._client.get_run(run_id).data.tags:
            self._client.delete_tag(run_id, "error")

    def _record(self, run: Run) -> RunRecord:
        info, data, names = run.info, run.data, self._experiment_names
        if info.experiment_id not in names:
            names[info.experiment_id] = self._client.get_experiment(info.experiment_id).name
        logged = dict(data.tags), dict(data.params), dict(data.metrics)
        name, experiment = info.run_name or "", names[info.experiment_id]
        return RunRecord(info.run_id, name, experiment, info.status, *logged, info.start_time, info.end_time)

    def _artifact_root(self, name: str) -> str | None:
        if self.uri.startswith("sqlite:///"):
            store_dir = Path(self.uri.removeprefix("sqlite:///")).parent
            return (store_dir / "artifacts" / name).as_uri()
        return None  # a tracking server decides


class TrackingError(FewshotError):
    """The MLflow tracking server stayed unreachable: what could not be logged is named."""


# What a client call raises when the tracking server is down (after MLflow's own retries).
UNREACHABLE = (MlflowException, OSError)


class MlflowReporter:
    """A training-loop reporter that logs each epoch's metrics to one MLflow run (step = epoch).

    Epochs the run already holds are skipped: a worker restarted from its last checkpoint repeats, with the
    same seeds, an epoch it may have logged just before it died, and the history must not hold it twice.

    A tracking server that cannot be reached does not stop training: the epoch is kept and sent, in order,
    with the next report. :meth:`flush` (when training ends) waits up to ``patience`` seconds for the server,
    then raises :class:`TrackingError` naming the epochs not logged — never a silent loss.
    """

    def __init__(self, tracker: Tracker, run_id: str, patience: float = 600.0) -> None:
        self.tracker, self.run_id, self.patience = tracker, run_id, patience
        self.logged = {step for step, _ in tracker.history(run_id, "loss")}
        self.pending: list[tuple[int, dict[str, float]]] = []

    def report(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if epoch in self.logged:
            return
        self.pending.append((epoch, dict(metrics)))
        self._send()

    def flush(self) -> None:
        """Send every kept epoch, waiting for the server up to ``patience`` seconds."""
        deadline = time.monotonic() + self.patience
        while not self._send():
            if time.monotonic() > deadline:
                epochs = ", ".join(str(epoch) for epoch, _ in self.pending)
                raise TrackingError(
                    f"MLflow at {self.tracker.uri} unreachable for {self.patience:.0f} s: epoch(s) {epochs} of run "
                    f"{self.run_id} not logged (the run's checkpoint history holds them)"
                )
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))

    def _send(self) -> bool:
        while self.pending:
            epoch, metrics = self.pending[0]
            try:
                self.tracker.log_metrics(self.run_id, metrics, step=epoch)
            except UNREACHABLE as err:
                reason = " ".join(str(err).split())[:200]
                log.warning(
                    "MLflow at %s unreachable (%s); %d epoch(s) kept to log later",
                    self.tracker.uri,
                    reason,
                    len(self.pending),
                )
                return False
            self.logged.add(epoch)
            self.pending.pop(0)
        return True


@contextmanager
def system_metrics(tracker: Tracker, run_id: str, interval: float = SYSTEM_METRICS_INTERVAL) -> Iterator[None]:
    """MLflow's own system-metrics monitor on ``run_id`` while the block runs: CPU, memory, disk and network, and
    GPU utilisation and memory where there is one, every ``interval`` seconds (``$MLFLOW_SYSTEM_METRICS_
    SAMPLING_INTERVAL`` overrides it) as ``system/...`` metrics; a restarted worker continues the steps."""
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=True, tracking_uri=tracker.uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent model API reads the process-wide tracking URI: ``uri`` while the block runs. Restores
    what was there exactly, the environment included: ``mlflow.set_tracking_uri`` also writes
    ``$MLFLOW_TRACKING_URI`` for subprocesses, and restoring it from ``get_tracking_uri()`` would leave this
    run's store there, where the next job started from this process (or the next run of this Ray worker,
    through ``default_tracking_uri``) would silently log into it."""
    from mlflow.tracking._tracking_service import utils  # the global behind set_tracking_uri

    global_before, env_before = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(global_before)  # type: ignore[arg-type]  # None: unset, as MLflow itself restores it
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before


def _pytorch_flavour() -> Any:
    """``mlflow.pytorch``, imported on first use without the side effect its import has: a handler on the root
    logger at level ERROR, which would silence every job's progress log (``logging.basicConfig`` then does
    nothing) and a Ray worker's log after its first model."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import mlflow.pytorch

    root.handlers[:] = handlers
    root.setLevel(level)
    return mlflow.pytorch
