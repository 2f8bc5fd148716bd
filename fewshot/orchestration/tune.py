"""A tuning study on Ray: Ray Tune trials, each a Ray Train run, sampled by Optuna and stopped early by ASHA.

The study's plan (space, base config, folder, trial sizes) is :mod:`fewshot.orchestration.study`; this module
is the Tune glue. Each trial is a child MLflow run holding its sampled params, its per-epoch curve and ASHA's
verdict (``completed`` / ``stopped at epoch e``). At the end the parent gets the trials table, the best config
as YAML and Optuna's plots (:mod:`fewshot.tracking.studies`).

Trials are sized from the cluster (:func:`~fewshot.orchestration.study.plan_trials`); the Tune side of a trial
reserves nothing, so it can never hold resources its own workers wait for. The decoded dataset is put in the
object store once (:mod:`fewshot.orchestration.shared`) and read zero-copy by every trial.

Ctrl-C, or a driver that dies, leaves a study that ``run_study(study, resume=True)`` continues: Tune restores
its trials, scheduler and searcher; a restarted trial continues its Ray Train run from the last epoch's
checkpoint and logs into its own MLflow run again, so finished trials are not rerun and MLflow holds one run
per trial.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import ray
import ray.tune
from optuna.samplers import TPESampler
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from fewshot.atomic import owned
from fewshot.config.loading import flatten
from fewshot.config.schema import ExperimentConfig, TrainedConfig
from fewshot.data.tables import FEWSHOT_DIRS, OFFICE_DIRS
from fewshot.orchestration.shared import SharedBanks, share_banks
from fewshot.orchestration.study import Study, StudyResult, TrialPlan, plan_trials
from fewshot.orchestration.sweep import connect_ray
from fewshot.orchestration.train import TrainJob, run_training
from fewshot.search import SearchSpace
from fewshot.tracking.runs import Tracker
from fewshot.tracking.studies import COMPLETED, VERDICT_TAG, last_epoch, publish_study, settle_trial

log = logging.getLogger(__name__)

METRIC = "val_acc"
TRIAL_TAG = "trial_id"
TRIAL_DRIVER_MEMORY = 512 * 2**20  # bytes: the process that starts a trial's Train run and relays its reports


def run_study(study: Study, resume: bool = False) -> StudyResult:
    """Run (or, with ``resume``, continue) ``study`` to the end or to Ctrl-C. One driver owns the study folder
    at a time: a second one (a ``--resume`` while it runs) is an error, never two Tunes writing one state."""
    with owned(study.folder):
        return _run_study(study, resume)


def _run_study(study: Study, resume: bool) -> StudyResult:
    connect_ray()
    space, base = study.search_space(), study.base_config()
    tracker = Tracker(study.tracking_uri)
    if resume:
        tracker.reopen(study.parent_run_id)
    plan = plan_trials(ray.cluster_resources(), study.samples, study.gpus_per_trial, study.cpus_per_trial)
    sizes = f"{plan.concurrent} at a time, each {plan.resources_per_worker}"
    log.info("study %s: %d trials, %s", study.name, study.samples, sizes)
    data = space.trial_config(space.midpoint(), base).data
    banks = share_banks(data, dirs=OFFICE_DIRS if space.method == "finetune" else FEWSHOT_DIRS)
    # The Tune side of a trial only waits on its Train run: it reserves memory, no CPU its workers could need.
    context = TrialContext(study, space, base, plan, banks, study.storage(study.folder / "train"))
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, context=context), {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY}
    )
    try:
        if resume:  # Tune restores trials, scheduler, searcher and this run's callbacks from the folder
            folder = study.storage(study.folder)
            tuner = ray.tune.Tuner.restore(folder, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = ray.tune.Tuner(
                trainable,
                param_space=_param_space(space, study.grid),
                tune_config=_tune_config(study, space, base, plan),
                run_config=ray.tune.RunConfig(
                    name=study.name,
                    storage_path=study.storage(study.folder.parent),
                    callbacks=[Verdicts(tracker.uri, study.parent_run_id)],
                    verbose=1,
                ),
            )
        tuner.fit()
    except BaseException as err:
        tracker.finish(study.parent_run_id, err)
        raise
    # Tune marks trials it stopped on Ctrl-C TERMINATED too: the MLflow runs tell what really ended
    ended = [run for run in tracker.children(study.parent_run_id) if run.status in ("FINISHED", "FAILED")]
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
    elif VERDICT_TAG in tracker.get(run_id).tags:
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
        verdict = settle_trial(tracker, run_id)
        score = (trial.last_result or {}).get(METRIC, math.nan)
        log.info("trial %s: %s (%s %.2f)", trial.trial_id, verdict, METRIC, score)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        tracker = Tracker(self.tracking_uri)
        run_id = tracker.find_child(self.parent, TRIAL_TAG, trial.trial_id)
        if run_id is None:  # failed before its run existed: record it anyway, the study counts ended runs
            experiment = tracker.get(self.parent).experiment
            run_id = tracker.start_run(experiment, str(trial), self.parent, {TRIAL_TAG: trial.trial_id})
        tracker.finish(run_id, TrialFailed(f"trial {trial.trial_id} failed; see {trial.local_path}"))


class TrialFailed(RuntimeError):
    pass


def _param_space(space: SearchSpace, grid: bool) -> dict[str, Any]:
    if grid:
        return {key: ray.tune.grid_search(values) for key, values in space.grid().items()}
    return {}  # Optuna samples from the space's own distributions


def _tune_config(study: Study, space: SearchSpace, base: TrainedConfig, plan: TrialPlan) -> ray.tune.TuneConfig:
    if study.grid:
        return ray.tune.TuneConfig(
            metric=METRIC, mode="max", scheduler=FIFOScheduler(), num_samples=1, max_concurrent_trials=plan.concurrent
        )
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
    return ray.tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=study.samples, max_concurrent_trials=plan.concurrent
    )


def _interrupted(tracker: Tracker, study: Study) -> None:
    """Mark the parent and its unfinished trials KILLED; the study folder keeps what resuming needs."""
    for run in tracker.children(study.parent_run_id):
        if run.status == "RUNNING":
            tracker.finish(run.run_id, KeyboardInterrupt("study interrupted"))
    tracker.finish(study.parent_run_id, KeyboardInterrupt("study interrupted; resume with jobs/tune.py --resume"))
