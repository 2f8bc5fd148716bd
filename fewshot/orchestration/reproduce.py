"""Both course reports from one job: every run of every study (× seeds) planned from a profile, each distinct
config trained once, all of them scheduled together across the cluster, and the report built from MLflow.

A run is identified by its resolved config's hash (:func:`~fewshot.config.loading.config_hash`): the 5-way
1-shot Euclidean ProtoNet of the distance, shot, train-way and method tables is one run. Running the job again
trains only what MLflow does not hold finished; an interrupted run continues from its checkpoint in its own
MLflow run. Fine-tunings wait for the pre-training whose backbone they start from; nothing else waits.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Collection, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from fewshot.atomic import owned
from fewshot.config.loading import config_hash, load_config
from fewshot.config.schema import (
    ExperimentConfig,
    FinetuneConfig,
    PretrainConfig,
    ReproduceProfile,
    TrainedConfig,
)
from fewshot.data.splits import decode_splits
from fewshot.data.tables import FEWSHOT_DIRS, OFFICE_DIRS
from fewshot.errors import ConfigError
from fewshot.orchestration.shared import SharedBanks
from fewshot.orchestration.studies import FEWSHOT_STUDIES, Variant, with_method
from fewshot.orchestration.sweep import (
    Launch,
    Run,
    Sizing,
    connect_ray,
    plan_runs,
    share_all,
    slug,
    train_runs,
)
from fewshot.orchestration.transfer import (
    FINETUNING,
    PRETRAINING,
    SETTINGS,
    check_office,
    pretrain_tags,
    probe_title,
    same_network,
    settings_title,
)
from fewshot.tracking.report import CONFIG_HASH_TAG, REPORT_EXPERIMENT, build_report, finished_run
from fewshot.tracking.runs import Tracker, source_tags
from fewshot.tracking.tables import register_best_of

log = logging.getLogger(__name__)

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
STUDIES = (*FEWSHOT_STUDIES, "tsne", "settings")


def load_profile(name: str) -> tuple[str, ReproduceProfile]:
    """A profile by name (``profiles/<name>.yaml``) or path; returns its name and contents."""
    path = Path(name).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise ConfigError(f"profile {name!r}: no file {path} (profiles: {known}, or a path to a YAML file)")
    return path.stem, load_config(ReproduceProfile, path)


@dataclass(frozen=True)
class Planned:
    """One distinct run: its config, the name it is shown under, its MLflow tags, and the runs (by hash) whose
    output it starts from."""

    key: str
    name: str
    config: TrainedConfig
    tags: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()


@dataclass
class Plan:
    """Every distinct run of a profile, and the tables its report makes of them (rows: value -> run hashes)."""

    profile: str
    runs: dict[str, Planned] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    tsne: list[str] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return f"reproduce-{self.profile}"

    def add(self, name: str, config: TrainedConfig, tags: dict[str, str], needs: Sequence[str] = ()) -> str:
        """The hash of ``config``'s run, planned once however many tables share it (their tags merged)."""
        key = config_hash(config)
        known = self.runs.get(key)
        merged = {**tags, **known.tags} if known else tags
        self.runs[key] = Planned(key, known.name if known else name, config, merged, tuple(needs))
        return key

    def table(self, study: str, by: str, title: str, rows: dict[str, list[str]], **extra: Any) -> None:
        rows_ = [{"value": value, "keys": keys} for value, keys in rows.items()]
        self.tables.append({"study": study, "by": by, "title": title, "rows": rows_, **extra})

    def describe(self) -> dict[str, Any]:
        """The plan as the report reads it back (``plan.json``)."""
        return {"profile": self.profile, "experiment": self.experiment, "tables": self.tables, "tsne": self.tsne}


def make_plan(
    name: str,
    profile: ReproduceProfile,
    results: Path,
    only: Collection[str] = (),
    data_root: str | None = None,
    seeds: int | None = None,
) -> Plan:
    """Every run of the profile's studies (those in ``only``, if given) and the tables they make."""
    unknown = sorted(set(only) - set(STUDIES))
    if unknown:
        raise ConfigError(f"--only {','.join(unknown)}: unknown study (studies: {', '.join(STUDIES)})")
    studies = profile.studies
    chosen = {s for s in STUDIES if getattr(studies, s.replace("-", "_")) not in (None, False)}
    if only:
        chosen &= set(only)
    root = [f"data.root={data_root}"] if data_root else []
    seeds = seeds or profile.seeds
    plan = Plan(name)
    base = _load(ExperimentConfig, [*profile.fewshot, *root], name, "fewshot")
    chance = round(100 / base.eval_episode.way, 2)
    for study, (make, kind) in FEWSHOT_STUDIES.items():
        if study in chosen:
            values = [kind(v) for v in getattr(studies, study.replace("-", "_"))]
            sweep = make(base, values).seeded(seeds)
            rows: dict[str, list[str]] = {}
            for variant in sweep.variants:
                key = plan.add(variant.name, variant.config, {**variant.tags})
                rows.setdefault(variant.tags[sweep.group_by], []).append(key)
            plan.table(study, sweep.group_by, sweep.title, rows, chance=chance)
    if "tsne" in chosen:
        for method in ("hallucination", "afhn"):
            plan.tsne.append(plan.add(method, with_method(base, method), {"method": method}))
    if "settings" in chosen and studies.settings:
        _plan_settings(plan, profile, studies.settings, results, root, seeds, name)
    if not plan.runs:
        raise ConfigError(f"profile {name!r}: no study to run (studies: {', '.join(STUDIES)})")
    return plan


def _load(kind: type, overrides: list[str], profile: str, section: str) -> Any:
    try:
        return load_config(kind, None, overrides)
    except ConfigError as err:
        raise ConfigError(f"profile {profile!r}, {section}: {err}") from None


def _plan_settings(
    plan: Plan, profile: ReproduceProfile, settings: str, results: Path, root: list[str], seeds: int, name: str
) -> None:
    """Office-Home settings A–E: the pre-trainings they need, then a fine-tuning per setting (× seeds)."""
    finetune = _load(FinetuneConfig, [*profile.finetune, *root], name, "finetune")
    backbones: dict[str, tuple[Path | None, tuple[str, ...]]] = {"none": (None, ())}
    probes: dict[str, list[str]] = {}
    for kind, method in (("supervised", "supervised"), ("ssl", "byol")):
        if any(SETTINGS[s][0] == kind for s in settings):
            own = getattr(profile, method)
            overrides = [f"method={method}", f"arch={finetune.arch}", *profile.pretrain, *own, *root]
            config = _load(PretrainConfig, overrides, name, "pretrain")
            try:
                same_network(finetune, config)
            except ConfigError as err:
                raise ConfigError(f"profile {name!r}: {err}") from None
            key = plan.add(f"pretrain-{method}", config, pretrain_tags(config))
            backbones[kind] = (run_dir(results, plan, key) / "backbone.pt", (key,))
            probes[PRETRAINING[kind]] = [key]
            chance, title = round(100 / config.eval_episode.way, 2), probe_title(config)
    if probes:  # each backbone's few-shot probe beside its untrained floor
        plan.table("probes", "pretraining", title, probes, chance=chance)
    rows: dict[str, list[str]] = {}
    for setting in settings:
        pretraining, finetuning = SETTINGS[setting]
        backbone, needs = backbones[pretraining]
        tags = {"setting": setting, "pretraining": PRETRAINING[pretraining], "finetuning": FINETUNING[finetuning]}
        for seed in range(seeds):
            config = finetune.model_copy(update={"backbone": backbone, "freeze": finetuning == "frozen", "seed": seed})
            label = f"setting {setting}" + (f"/seed{seed}" if seeds > 1 else "")
            rows.setdefault(setting, []).append(plan.add(label, config, tags, needs))
    describe = ["pretraining", "finetuning"]
    plan.table("settings", "setting", settings_title(finetune), rows, describe=describe, chance=None)


def run_dir(results: Path, plan: Plan, key: str) -> Path:
    """Where a planned run trains: named by its config's hash, so a second job finds its checkpoints."""
    return results / "reproduce" / plan.profile / "runs" / f"{slug(plan.runs[key].name)}-{key}"


@dataclass(frozen=True)
class Survey:
    """What MLflow holds of each planned run: finished (its run id), interrupted (the run to continue), or
    nothing yet."""

    finished: dict[str, str]
    interrupted: dict[str, str]

    def status(self, key: str) -> str:
        return "done" if key in self.finished else "resume" if key in self.interrupted else "new"


def survey(plan: Plan, tracker: Tracker) -> Survey:
    finished, interrupted = {}, {}
    for key in plan.runs:
        runs = tracker.find(plan.experiment, CONFIG_HASH_TAG, key)
        done = next((run for run in runs if run.status == "FINISHED"), None)
        if done is not None:
            finished[key] = done.run_id
        elif runs:
            interrupted[key] = runs[0].run_id
    return Survey(finished, interrupted)


def dry_run(plan: Plan, tracker: Tracker, results: Path, sizing: Sizing) -> str:
    """The plan as text: every run, its hash, the tables it is in, whether it is done, and its resources."""
    state = survey(plan, tracker)
    todo = [key for key in plan.runs if state.status(key) != "done"]
    here = {"CPU": float(os.cpu_count() or 1), "GPU": float(_gpus())}
    sized = plan_runs(here, max(1, len(todo)), sizing)
    member = {key: [t["study"] for t in plan.tables for row in t["rows"] if key in row["keys"]] for key in plan.runs}
    lines = [f"profile {plan.profile}: {len(plan.runs)} runs, {len(todo)} to train (MLflow: {tracker.uri})"]
    for key, planned in plan.runs.items():
        tables = ",".join(member[key]) or ("tsne" if key in plan.tsne else "backbone of settings")
        needs = f"  after {','.join(planned.needs)}" if planned.needs else ""
        lines.append(f"  {key}  {state.status(key):6}  {planned.name:24} {tables}{needs}")
    lines.append(
        f"on this machine: {sized.concurrent} at a time, each worker {sized.resources_per_worker} "
        f"(a Ray cluster sizes them from its own resources); run folders: {results / 'reproduce' / plan.profile}"
    )
    return "\n".join(lines)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def reproduce(plan: Plan, tracker: Tracker, results: Path, sizing: Sizing, command: str) -> Path:
    """Train every run of ``plan`` that MLflow does not hold finished, all at once as far as the cluster and
    their dependencies allow, then build the report; returns ``report.md``. The report's MLflow run
    (experiment ``report``) holds it, its figures and the plan."""
    folder = results / "reproduce" / plan.profile
    with ExitStack() as stack:
        stack.enter_context(owned(folder))  # one driver per profile and results folder
        tags = {"profile": plan.profile, "command": command}
        parent = stack.enter_context(tracker.run(REPORT_EXPERIMENT, f"report-{plan.profile}", tags=tags))
        state = survey(plan, tracker)
        for key, run_id in state.finished.items():
            log.info("%s already finished (MLflow run %s)", plan.runs[key].name, run_id)
        runs = [_run(plan, key, state, results) for key in plan.runs if key not in state.finished]
        needed = {need for run in runs for need in run.needs}
        runs.sort(key=lambda run: run.run_dir not in needed)  # the pre-trainings first: fine-tunings wait on them
        log.info(
            "%d runs in the plan: %d finished, %d to continue, %d to train",
            len(plan.runs),
            len(state.finished),
            len(state.interrupted),
            len(runs) - len(state.interrupted),
        )
        if runs:
            banks = _decode(plan, runs)
            train_runs(runs, Launch(tracker, results, sizing, banks))
        _register(plan, tracker, parent)
        described = plan.describe() | {"produced": _produced(command)}
        report = build_report(tracker, described, folder / f"report-{time.strftime('%Y%m%d-%H%M%S')}")
        for path in sorted(report.parent.rglob("*")):
            if path.is_file():
                sub = path.parent.relative_to(report.parent)
                tracker.log_artifact(parent, path, None if sub == Path() else str(sub))
        tracker.set_tags(parent, {"report_dir": report.parent, "runs": len(plan.runs)})
        return report


def _register(plan: Plan, tracker: Tracker, parent: str) -> None:
    """The best model of each few-shot table (by selection score) as a new version of ``fewshot-<study>``. Not
    settings A–E: Office-Home has no split apart from the one its scores report on, so no run can be chosen."""
    for table in plan.tables:
        if table["study"] == "settings":
            continue
        keys = [key for row in table["rows"] for key in row["keys"]]
        runs = [run for run in (finished_run(tracker, plan.experiment, key) for key in keys) if run is not None]
        registered = register_best_of(tracker, runs, table["study"])
        if registered is not None:
            name, version, run_id = registered
            tracker.set_tags(parent, {f"registered.{table['study']}": f"{name}/{version} (run {run_id})"})


def _run(plan: Plan, key: str, state: Survey, results: Path) -> Run:
    planned = plan.runs[key]
    needs = tuple(run_dir(results, plan, need) for need in planned.needs if need not in state.finished)
    tags = {**planned.tags, CONFIG_HASH_TAG: key}
    variant = Variant(planned.name, planned.config, tags)
    return Run(
        variant, run_dir(results, plan, key), plan.experiment, resume_run=state.interrupted.get(key), needs=needs
    )


def _decode(plan: Plan, runs: Sequence[Run]) -> SharedBanks:
    """Check and decode every dataset the runs read (a mistake is one line before Ray starts), then share the
    decoded splits through the object store: one copy per node, however many runs read them."""
    configs = [run.variant.config for run in runs]
    fewshot = [c for c in configs if isinstance(c, ExperimentConfig)]
    pretrain = [c for c in configs if isinstance(c, PretrainConfig)]
    finetune = [c for c in configs if isinstance(c, FinetuneConfig)]
    for episodic in {c.data: c for c in fewshot}.values():
        decode_splits(episodic.data, episodic.train_episode)
    for data in dict.fromkeys(c.data for c in pretrain):
        decode_splits(data)
    for tuning in {c.data: c for c in finetune}.values():
        check_office(tuning)
    connect_ray()
    banks = share_all([*(c.data for c in fewshot), *(c.data for c in pretrain)], FEWSHOT_DIRS)
    if finetune:
        office = share_all([c.data for c in finetune], OFFICE_DIRS)
        banks = replace(banks, refs=banks.refs | office.refs, digests=banks.digests | office.digests)
    return banks


def _produced(command: str) -> dict[str, str]:
    """What the report says made it: the command, when, on what machine, from which commit."""
    cpus, gpus = os.cpu_count(), _gpus()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nodes = len(ray.nodes()) if ray.is_initialized() else 1
    machine = f"{platform.node()} ({cpus} CPUs, {memory:.0f} GiB, {gpus or 'no'} GPU; Ray cluster of {nodes} node(s))"
    commit = source_tags().get("mlflow.source.git.commit", "unknown")
    return {"command": command, "finished": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine, "commit": commit}
