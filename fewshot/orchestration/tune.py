"""A tuning study: Ray Tune trials, each a Ray Train run, sampled by Optuna and stopped early by ASHA.

One study lives in ``<results>/tune/<name>/``: Tune's experiment state, a Ray Train folder per trial, and
``study.json`` — what is needed to resume it (the space, the base config, the MLflow parent run). In MLflow
the study is a parent run in experiment ``tune-<method>``, and each trial a child run holding its sampled
params, its per-epoch curve and ASHA's verdict (``completed`` / ``stopped at epoch e``). At the end the parent
gets the trials table, the best config as YAML and Optuna's plots (:mod:`fewshot.tracking.studies`).

Trials are sized from the cluster (:func:`plan_trials`): one Train worker per trial, a fraction of a GPU each
on GPU nodes, a CPU each otherwise, and no more trials at once than fit — the Tune side of a trial reserves
nothing, so it can never hold resources its own workers wait for. The decoded dataset is put in the object
store once (:mod:`fewshot.orchestration.shared`) and read zero-copy by every trial.

Ctrl-C, or a driver that dies, leaves a study that :func:`resume_study` continues: Tune restores its trials,
scheduler and searcher; a restarted trial continues its Ray Train run from the last epoch's checkpoint and
logs into its own MLflow run again, so finished trials are not rerun and MLflow holds one run per trial.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune
from optuna.samplers import TPESampler
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from fewshot.atomic import write_text_atomic
from fewshot.config.loading import config_dict, flatten, validate_config
from fewshot.config.schema import ExperimentConfig, TrainedConfig
from fewshot.data.tables import FEWSHOT_DIRS, OFFICE_DIRS
from fewshot.errors import ConfigError
from fewshot.orchestration.shared import SharedBanks, share_banks
from fewshot.orchestration.sweep import connect_ray
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.paths import ray_storage
from fewshot.search import SearchSpace, check_space, config_type
from fewshot.tracking.runs import Tracker
from fewshot.tracking.studies import COMPLETED, VERDICT_TAG, StudySummary, last_epoch, publish_study

log = logging.getLogger(__name__)

METRIC = "val_acc"
TRIAL_TAG = "trial_id"
FINAL_METRIC = "best_epoch"  # logged once a run has trained every epoch and scored its best checkpoint
MANIFEST = "study.json"
DEFAULT_GPUS_PER_TRIAL = 0.25  # a Conv4 trial uses a small part of a GPU: four share one
TRIAL_DRIVER_MEMORY = 512 * 2**20  # bytes: the process that starts a trial's Train run and relays its reports


@dataclass(frozen=True)
class TrialPlan:
    """How big one trial is and how many run at once."""

    resources_per_worker: dict[str, float]
    use_gpu: bool
    concurrent: int


def plan_trials(
    cluster: dict[str, float], samples: int, gpus_per_trial: float | None = None, cpus_per_trial: int | None = None
) -> TrialPlan:
    """Size trials from the cluster's resources: ``gpus_per_trial`` of a GPU (default a quarter) on a GPU
    cluster, else ``cpus_per_trial`` CPUs (default one); at most as many at once as fit, and ``samples``."""
    cpus, gpus = int(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    if cpus < 1:
        raise ConfigError("the Ray cluster has no CPUs")
    if gpus_per_trial is not None and gpus == 0:
        raise ConfigError(f"--gpus-per-trial {gpus_per_trial}: the Ray cluster has no GPUs")
    if gpus > 0:
        share = gpus_per_trial if gpus_per_trial is not None else min(DEFAULT_GPUS_PER_TRIAL, gpus)
        if not 0 < share <= gpus or (share > 1 and share != int(share)):
            raise ConfigError(f"--gpus-per-trial {share}: give a fraction of one GPU or a whole number ≤ {gpus:g}")
        fit = min(math.floor(gpus / share + 1e-9), samples, cpus)
        cpu = cpus_per_trial or max(1, cpus // fit)
        return TrialPlan({"CPU": cpu, "GPU": share}, True, max(1, min(fit, cpus // cpu)))
    cpu = cpus_per_trial or 1
    if cpu > cpus:
        raise ConfigError(f"--cpus-per-trial {cpu}: the Ray cluster has {cpus} CPUs")
    return TrialPlan({"CPU": cpu}, False, max(1, min(cpus // cpu, samples)))


@dataclass(frozen=True)
class Study:
    """What a study needs to run and to resume; saved as ``study.json`` in its folder."""

    name: str
    folder: Path
    space_file: str
    space: dict[str, Any]
    base: dict[str, Any]  # the config every trial starts from, before the space's fixed part
    samples: int
    grid: bool
    tracking_uri: str
    parent_run_id: str
    gpus_per_trial: float | None = None
    cpus_per_trial: int | None = None

    @property
    def experiment(self) -> str:
        return f"tune-{self.space['method']}"

    def search_space(self) -> SearchSpace:
        return validate_config(SearchSpace, self.space, self.space_file)

    def base_config(self) -> TrainedConfig:
        kind = config_type(self.space["method"])
        return validate_config(kind, self.base, f"{self.folder / MANIFEST}: base")

    def save(self) -> None:
        data = {**asdict(self), "folder": str(self.folder)}
        write_text_atomic(self.folder / MANIFEST, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Study:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{folder} is not a study folder (no {MANIFEST})") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is damaged ({err})") from None
        return cls(**{**data, "folder": Path(data["folder"])})


@dataclass(frozen=True)
class StudyResult:
    study: Study
    summary: StudySummary | None  # None when interrupted
    interrupted: bool


def new_study(
    space_file: Path,
    space: SearchSpace,
    base: TrainedConfig,
    tracker: Tracker,
    results: Path,
    samples: int | None = None,
    grid: bool = False,
    gpus_per_trial: float | None = None,
    cpus_per_trial: int | None = None,
) -> Study:
    """Create the study's folder, manifest and MLflow parent run."""
    check_space(space, space_file, base)
    if grid:
        space.grid()  # every param must have grid values: fail now, not after the first trials
    name = f"{space_file.stem}-{'grid' if grid else 'asha'}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = results / "tune" / name
    folder.mkdir(parents=True, exist_ok=False)
    n = space.grid_size() if grid else samples or space.samples
    experiment = f"tune-{space.method}"
    tags = {"study": name, "space": space_file.name, "search": "grid" if grid else "optuna+asha", "samples": n}
    parent = tracker.start_run(experiment, name, tags=tags)
    tracker.set_tags(parent, {"results_dir": folder})
    tracker.log_params(parent, {f"space.{k}": v for k, v in flatten(space).items()})
    study = Study(name, folder, str(space_file), config_dict(space), config_dict(base), n, grid, tracker.uri, parent,
                  gpus_per_trial, cpus_per_trial)  # fmt: skip
    study.save()
    return study


def run_study(study: Study, resume: bool = False) -> StudyResult:
    """Run (or, with ``resume``, continue) ``study`` to the end or to Ctrl-C."""
    connect_ray()
    space, base = study.search_space(), study.base_config()
    tracker = Tracker(study.tracking_uri)
    if resume:
        tracker.reopen(study.parent_run_id)
    plan = plan_trials(ray.cluster_resources(), study.samples, study.gpus_per_trial, study.cpus_per_trial)
    log.info("study %s: %d trials, %d at a time, each %s", study.name, study.samples, plan.concurrent,
             plan.resources_per_worker)  # fmt: skip
    data = space.trial_config(space.midpoint(), base).data
    banks = share_banks(data, dirs=OFFICE_DIRS if space.method == "finetune" else FEWSHOT_DIRS)
    # The Tune side of a trial only waits on its Train run: it reserves memory, no CPU its workers could need.
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(
            _trial, context=TrialContext(study, space, base, plan, banks, ray_storage(study.folder / "train"))
        ),
        {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY},
    )
    try:
        if resume:  # Tune restores trials, scheduler, searcher and this run's callbacks from the folder
            tuner = ray.tune.Tuner.restore(ray_storage(study.folder), trainable, resume_unfinished=True,
                                           resume_errored=True)  # fmt: skip
        else:
            tuner = ray.tune.Tuner(
                trainable,
                param_space=_param_space(space, study.grid),
                tune_config=_tune_config(study, space, base, plan),
                run_config=ray.tune.RunConfig(
                    name=study.name,
                    storage_path=ray_storage(study.folder.parent),
                    callbacks=[Verdicts(tracker.uri, study.parent_run_id)],
                    verbose=1,
                ),
            )
        tuner.fit()
    except BaseException as err:
        tracker.finish(study.parent_run_id, err)
        raise
    # Tune marks trials it stopped on Ctrl-C TERMINATED too: the MLflow runs tell what really ended
    ended = [run for run in tracker.children(study.parent_run_id) if run.info.status in ("FINISHED", "FAILED")]
    if len(ended) < study.samples:  # Ctrl-C: Tune saved its state and returned
        _interrupted(tracker, study)
        return StudyResult(study, None, interrupted=True)
    summary = publish_study(tracker, study.parent_run_id, space, base, study.folder)
    tracker.finish(study.parent_run_id)
    return StudyResult(study, summary, interrupted=False)


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares (passed once through the object store)."""

    study: Study
    space: SearchSpace
    base: TrainedConfig
    plan: TrialPlan
    banks: SharedBanks
    storage: str  # where the trials' Ray Train runs keep their checkpoints (decided by the driver)


def _trial(params: dict[str, Any], context: TrialContext) -> None:
    """One trial: its config from the sampled ``params``, its MLflow run, its Ray Train run."""
    study = context.study
    tune_context = ray.tune.get_context()
    trial_id = tune_context.get_trial_id()
    config = context.space.trial_config(params, context.base)
    tracker = Tracker(study.tracking_uri)
    run_id = tracker.find_child(study.parent_run_id, TRIAL_TAG, trial_id)
    if run_id is None:
        tags = {TRIAL_TAG: trial_id, "method": context.space.method, "seed": config.seed}
        if isinstance(config, ExperimentConfig):
            tags |= {"train_way": config.train_episode.way, "shot": config.train_episode.shot}
            if config.method == "hallucination":
                tags["m"] = config.hallucination.m
        run_id = tracker.start_run(study.experiment, tune_context.get_trial_name(), study.parent_run_id, tags)
        tracker.log_params(run_id, flatten(config))
    elif VERDICT_TAG in tracker.client.get_run(run_id).data.tags:
        # It ended after Tune last saved the study (the driver was killed): hand Tune its result, train nothing.
        ray.tune.report(last_epoch(tracker, run_id))
        return
    else:  # the trial restarts after an interruption: same run, same Ray Train folder, from the last epoch
        tracker.reopen(run_id)
    job = TrainJob(
        config,
        name=f"trial-{trial_id}",
        run_dir=study.folder / "trials" / trial_id,
        storage_path=context.storage,
        tracking_uri=tracker.uri,
        mlflow_run_id=run_id,
        use_gpu=context.plan.use_gpu,
        resources_per_worker=context.plan.resources_per_worker,
        callbacks=(TuneReportCallback(),),
        banks=context.banks,
    )
    run_training(job)
    # Tell Tune where the trial ended even when this incarnation reported nothing (its Ray Train run had
    # finished before the driver died, so resuming it trained no epoch).
    ray.tune.report(last_epoch(tracker, run_id))
    # Trained every epoch and scored on every fixed episode. A stop ASHA decided meanwhile came too late to
    # save anything, so the verdict records what happened; trials ASHA did stop are ended by ``Verdicts``.
    tracker.set_tags(run_id, {VERDICT_TAG: COMPLETED})
    tracker.finish(run_id)


class Verdicts(ray.tune.Callback):
    """Driver side: ends the MLflow run of each trial ASHA stopped (``stopped at epoch e``, e the last epoch
    it trained), or that failed; a trial that ran to the end has already tagged itself ``completed``.

    Tune saves it with the study's state, so it holds only plain values and opens the store when called.
    """

    def __init__(self, tracking_uri: str, parent: str) -> None:
        self.tracking_uri, self.parent = tracking_uri, parent

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        tracker = Tracker(self.tracking_uri)
        run_id = tracker.find_child(self.parent, TRIAL_TAG, trial.trial_id)
        if run_id is None:
            return
        run = tracker.client.get_run(run_id)
        if run.info.status == "RUNNING":
            if FINAL_METRIC in run.data.metrics:  # stopped between its final score and its own verdict
                verdict = COMPLETED
            else:
                epochs = max((m.step for m in tracker.client.get_metric_history(run_id, "loss")), default=0)
                verdict = f"stopped at epoch {epochs}"
            tracker.set_tags(run_id, {VERDICT_TAG: verdict})
            tracker.finish(run_id)
        score = (trial.last_result or {}).get(METRIC, math.nan)
        log.info("trial %s: %s (%s %.2f)", trial.trial_id, tracker.client.get_run(run_id).data.tags[VERDICT_TAG],
                 METRIC, score)  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        tracker = Tracker(self.tracking_uri)
        run_id = tracker.find_child(self.parent, TRIAL_TAG, trial.trial_id)
        if run_id is None:  # failed before its run existed: record it anyway, the study counts ended runs
            experiment = tracker.client.get_run(self.parent).info.experiment_id
            name = tracker.client.get_experiment(experiment).name
            run_id = tracker.start_run(name, str(trial), self.parent, {TRIAL_TAG: trial.trial_id})
        tracker.finish(run_id, TrialFailed(f"trial {trial.trial_id} failed; see {trial.local_path}"))


class TrialFailed(RuntimeError):
    pass


def _param_space(space: SearchSpace, grid: bool) -> dict[str, Any]:
    if grid:
        return {key: ray.tune.grid_search(values) for key, values in space.grid().items()}
    return {}  # Optuna samples from the space's own distributions


def _tune_config(study: Study, space: SearchSpace, base: TrainedConfig, plan: TrialPlan) -> ray.tune.TuneConfig:
    if study.grid:
        return ray.tune.TuneConfig(metric=METRIC, mode="max", scheduler=FIFOScheduler(), num_samples=1,
                                   max_concurrent_trials=plan.concurrent)  # fmt: skip
    # metric and mode go to the scheduler and searcher themselves: Tune's concurrency limiter hides the
    # searcher from TuneConfig's metric.
    scheduler = ASHAScheduler(
        metric=METRIC,
        mode="max",
        time_attr="epoch",
        max_t=space.epochs(base),
        grace_period=space.asha.grace_period,
        reduction_factor=space.asha.reduction_factor,
    )
    searcher = OptunaSearch(space.distributions(), metric=METRIC, mode="max", sampler=TPESampler(seed=base.seed))
    return ray.tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=study.samples,
                               max_concurrent_trials=plan.concurrent)  # fmt: skip


def _interrupted(tracker: Tracker, study: Study) -> None:
    """Mark the parent and its unfinished trials KILLED; the study folder keeps what resuming needs."""
    for run in tracker.children(study.parent_run_id):
        if run.info.status == "RUNNING":
            tracker.finish(run.info.run_id, KeyboardInterrupt("study interrupted"))
    tracker.finish(study.parent_run_id, KeyboardInterrupt("study interrupted; resume with jobs/tune.py --resume"))


def latest_study(results: Path) -> Path:
    """The most recently started study folder under ``<results>/tune``."""
    folders = sorted((p.parent for p in (results / "tune").glob(f"*/{MANIFEST}")), key=os.path.getmtime)
    if not folders:
        raise ConfigError(f"no study to resume under {results / 'tune'}")
    return folders[-1]
