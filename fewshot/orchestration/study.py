"""A tuning study's plan, apart from Ray: what it searches and where it lives (:class:`Study`, saved as
``study.json`` in its folder so it can be resumed), and how big its trials are (:func:`plan_trials`).

One study lives in ``<results>/tune/<name>/``: Tune's experiment state, a Ray Train folder per trial, and
``study.json``. In MLflow the study is a parent run in experiment ``tune-<method>``; each trial is a child run
(:mod:`fewshot.tracking.studies` reads them back). :mod:`fewshot.orchestration.tune` runs a study on Ray.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fewshot.atomic import fresh_folder, write_text_atomic
from fewshot.config.loading import config_dict, flatten, validate_config
from fewshot.config.schema import TrainedConfig
from fewshot.errors import ConfigError
from fewshot.paths import ray_storage
from fewshot.search import PARAM_TYPES, SearchSpace, check_space, config_type
from fewshot.tracking.runs import Tracker
from fewshot.tracking.studies import StudySummary

MANIFEST = "study.json"
DEFAULT_GPUS_PER_TRIAL = 0.25  # a Conv4 trial uses a small part of a GPU: four share one


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
    folder: Path  # <results>/tune/<name>
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

    def storage(self, folder: Path) -> str:
        """Where Ray keeps the state of ``folder`` of this study (see :func:`~fewshot.paths.ray_storage`)."""
        return ray_storage(folder, self.folder.parent.parent)  # the study's folder is <results>/tune/<name>

    def search_space(self) -> SearchSpace:
        return validate_config(SearchSpace, self.space, self.space_file, tags=PARAM_TYPES)

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
    folder = fresh_folder(
        results / "tune" / f"{space_file.stem}-{'grid' if grid else 'asha'}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    name = folder.name  # two studies started in the same second get folders of their own
    n = space.grid_size() if grid else samples or space.samples
    experiment = f"tune-{space.method}"
    tags = {"study": name, "space": space_file.name, "search": "grid" if grid else "optuna+asha", "samples": n}
    parent = tracker.start_run(experiment, name, tags=tags)
    tracker.set_tags(parent, {"results_dir": folder})
    tracker.log_params(parent, {f"space.{k}": v for k, v in flatten(space).items()})
    dumped, trials = (config_dict(space), config_dict(base)), (gpus_per_trial, cpus_per_trial)
    study = Study(name, folder, str(space_file), *dumped, n, grid, tracker.uri, parent, *trials)
    study.save()
    return study


def latest_study(results: Path) -> Path:
    """The most recently started study folder under ``<results>/tune``."""
    folders = sorted((p.parent for p in (results / "tune").glob(f"*/{MANIFEST}")), key=os.path.getmtime)
    if not folders:
        raise ConfigError(f"no study to resume under {results / 'tune'}")
    return folders[-1]
