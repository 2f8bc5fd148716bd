"""Transfer learning as Ray jobs: pre-train a ResNet backbone, fine-tune it on Office-Home, settings A–E.

A pre-training lives in a folder named after its config (``results/pretrain/<method>-<hash>``): running the
same config again reuses its finished ``backbone.pt``, or resumes it from ``last.pt`` if it was interrupted.
The settings study is one MLflow parent run (experiment ``office-settings``) with a child run per setting, the
pre-trainings it needed as child runs too, and the A–E table and plot on the parent.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from fewshot.config.loading import config_hash, to_yaml
from fewshot.config.schema import FinetuneConfig, PretrainConfig
from fewshot.data.splits import check_splits, decode_splits
from fewshot.data.tables import FEWSHOT_DIRS, OFFICE_DIRS
from fewshot.errors import ConfigError, FewshotError
from fewshot.models.resnet import display_name, load_backbone, resnet_backbone
from fewshot.orchestration.studies import Variant
from fewshot.orchestration.sweep import (
    AS_MANY_AS_FIT,
    RUN_ID_FILE,
    Launch,
    Run,
    Sizing,
    connect_ray,
    open_parent,
    share_all,
    train_runs,
    unfinished,
)
from fewshot.tracking.runs import Tracker
from fewshot.tracking.tables import Comparison, compare, publish, run_scores, runs_frame, sweep_table
from fewshot.training.finetune import class_targets

log = logging.getLogger(__name__)

# Each setting: where the backbone comes from, and whether fine-tuning trains it.
SETTINGS = {
    "A": ("none", "full"),
    "B": ("supervised", "full"),
    "C": ("ssl", "full"),
    "D": ("supervised", "frozen"),
    "E": ("ssl", "frozen"),
}
PRETRAINING = {"none": "none (random init)", "supervised": "supervised", "ssl": "BYOL (no labels)"}
FINETUNING = {"full": "full network", "frozen": "classifier only (frozen backbone)"}
STUDY = "office-settings"


def same_network(finetune: FinetuneConfig, pretrain: PretrainConfig) -> None:
    """Refuse a pre-training whose network is not the one fine-tuning builds (it could not load the weights)."""
    if pretrain.arch != finetune.arch:
        raise ConfigError(
            f"the {pretrain.method} pre-training trains a {pretrain.arch} but fine-tuning builds a {finetune.arch}: "
            "give both the same arch"
        )


def settings_title(finetune: FinetuneConfig) -> str:
    """The A–E table's title: what was scored, on which network, at which image size."""
    size = finetune.data.image_size
    return f"Office-Home validation accuracy by setting ({display_name(finetune.arch)}, {size} px)"


def pretrain_dir(config: PretrainConfig, results: Path) -> Path:
    """Where a pre-training of ``config`` lives: its ``output_dir``, else a folder named by the config's hash."""
    if config.output_dir is not None:
        return Path(config.output_dir).expanduser().resolve()
    return results / "pretrain" / f"{config.method}-{config_hash(config, 10)}"


def pretrain_tags(config: PretrainConfig) -> dict[str, str]:
    """A pre-training's MLflow tags: its stage, and its pre-training as settings A–E name it."""
    return {"stage": "pretrain", "pretraining": PRETRAINING["ssl" if config.method == "byol" else "supervised"]}


def probe_title(config: PretrainConfig) -> str:
    """The title of the table of the pre-trained backbones' probes."""
    episode, network = config.eval_episode, f"{display_name(config.arch)}, {config.data.image_size} px"
    return f"Backbone probes: {episode.way}-way {episode.shot}-shot nearest prototype ({network})"


def probe_table(tracker: Tracker, configs: Sequence[PretrainConfig], results: Path) -> pd.DataFrame:
    """Each finished pre-training's probe (the backbone's features on few-shot episodes of unseen classes) beside
    its untrained floor (the same network at its random init, on the same episodes), from its MLflow run."""
    records = []
    for config in configs:
        id_file = pretrain_dir(config, results) / RUN_ID_FILE
        if id_file.is_file():
            records.append(tracker.get(id_file.read_text().strip()))
    with tempfile.TemporaryDirectory(prefix="fewshot-scores-") as folder:
        return compare(runs_frame(records), "pretraining", scores=run_scores(tracker, Path(folder)))


def pretrain_backbones(
    configs: Sequence[PretrainConfig], launch: Launch, study: str = "pretrain", parent: str | None = None
) -> list[Path]:
    """The ``backbone.pt`` of a finished pre-training of each config: reused if there is one, else trained as
    Ray Train runs, at once, as ``launch`` says, tracked in ``study`` under ``parent`` (an interrupted one
    resumes from its ``last.pt``)."""
    runs, methods = [], []
    for config in configs:
        run_dir = pretrain_dir(config, launch.results)
        if (run_dir / "backbone.pt").is_file() and (run_dir / "config.yaml").read_text() == to_yaml(config):
            log.info("%s pre-training already done: reusing %s", config.method, run_dir / "backbone.pt")
            continue
        earlier = _interrupted_run(launch.tracker, run_dir)
        if earlier is not None:
            log.info("resuming the %s pre-training in %s (MLflow run %s)", config.method, run_dir, earlier)
        variant = Variant(f"pretrain-{config.method}", config, pretrain_tags(config))
        runs.append(Run(variant, run_dir, study, parent, resume_run=earlier))
        methods.append(config.method)
    if runs:
        banks = share_all((run.variant.config.data for run in runs), FEWSHOT_DIRS)
        finished = train_runs(runs, replace(launch, banks=banks))
        for run, method, done in zip(runs, methods, finished, strict=True):
            if not done:
                raise FewshotError(
                    f"{method} pre-training failed; its MLflow run's 'error' tag says why ({run.run_dir})"
                )
    return [pretrain_dir(config, launch.results) / "backbone.pt" for config in configs]


def _interrupted_run(tracker: Tracker, run_dir: Path) -> str | None:
    """The MLflow run of an unfinished training in ``run_dir`` (it has a ``last.pt``), if ``tracker``'s store
    has it: the resumed training goes on logging there, one run with one history."""
    path = run_dir / RUN_ID_FILE
    if not (run_dir / "last.pt").is_file() or not path.is_file():
        return None
    run_id = path.read_text().strip()
    # a run of another store (MLFLOW_TRACKING_URI changed) or a deleted run: start a new one
    return run_id if tracker.exists(run_id) else None


def check_office(finetune: FinetuneConfig) -> None:
    """Check the Office-Home splits a fine-tuning reads (files, labels the training split knows) and decode them
    into the cache: a mistake or a corrupt image is one line before Ray starts."""
    train, val = check_splits(finetune.data, dirs=OFFICE_DIRS, test=False)
    class_targets(val, train.classes)
    decode_splits(finetune.data, dirs=OFFICE_DIRS, test=False)


@dataclass(frozen=True)
class OfficeStudy:
    """Settings to run, the fine-tuning config they share, and for each kind of pre-trained backbone either a
    checkpoint to use or the config to pre-train one with."""

    finetune: FinetuneConfig
    supervised: PretrainConfig | Path
    ssl: PretrainConfig | Path
    settings: str = "ABCDE"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.settings) - set(SETTINGS))
        if unknown or not self.settings:
            raise FewshotError(f"settings {self.settings!r}: choose from {''.join(SETTINGS)} (e.g. ABCDE or BD)")
        # Data and checkpoint mistakes fail here, before any training; the cheap checks first, then every split
        # is decoded into the cache, so a corrupt image is one line before Ray starts.
        sources = [getattr(self, kind) for kind in self.needed()]
        arch = self.finetune.arch
        for source in sources:
            if isinstance(source, Path):
                load_backbone(resnet_backbone(arch), source, arch)
            else:
                same_network(self.finetune, source)
        check_office(self.finetune)
        for data in {source.data for source in sources if isinstance(source, PretrainConfig)}:
            decode_splits(data)

    def needed(self) -> list[str]:
        """The kinds of pre-trained backbone (``supervised``, ``ssl``) the settings use."""
        return [kind for kind in ("supervised", "ssl") if any(SETTINGS[s][0] == kind for s in self.settings)]


def run_office(
    study: OfficeStudy, tracker: Tracker, results: Path, sizing: Sizing = AS_MANY_AS_FIT, resume: bool = False
) -> Comparison:
    """Pre-train what the settings need (at once), fine-tune every setting (at once), publish the A–E table.
    With ``resume``, continue the latest study of these settings: finished settings are kept."""
    with ExitStack() as parents:
        name = f"settings-{study.settings}"
        parent, out, resumed = open_parent(tracker, STUDY, name, "setting", results, resume, parents)
        connect_ray()
        launch = Launch(tracker, results, sizing)
        sources = {kind: getattr(study, kind) for kind in study.needed()}
        to_train = {kind: source for kind, source in sources.items() if isinstance(source, PretrainConfig)}
        sources |= dict(zip(to_train, pretrain_backbones(list(to_train.values()), launch, STUDY, parent), strict=True))
        tracker.set_tags(parent, {f"{kind}_backbone": source for kind, source in sources.items()})
        backbones: dict[str, Path | None] = {"none": None, **sources}
        runs = []
        for setting in study.settings:
            pretraining, finetuning = SETTINGS[setting]
            update = {"backbone": backbones[pretraining], "freeze": finetuning == "frozen"}
            config = study.finetune.model_copy(update=update)
            tags = {"setting": setting, "pretraining": PRETRAINING[pretraining], "finetuning": FINETUNING[finetuning]}
            label = f"{setting}: {tags['pretraining']}, {tags['finetuning']}"
            runs.append(Run(Variant(label, config, tags), out / setting, STUDY, parent, "office"))
        if resumed:
            runs = unfinished(runs, tracker)
        if runs:
            train_runs(runs, replace(launch, banks=share_all([study.finetune.data], OFFICE_DIRS)))
        describe = ("pretraining", "finetuning")
        table = sweep_table(tracker, parent, "setting", describe)
        if table.empty:
            raise FewshotError("every setting failed; see the child runs' 'error' tags")
        trained = list(to_train.values())
        probes = probe_table(tracker, trained, results) if trained else None
        if probes is not None and not probes.empty:  # shown in the log; the job prints the A–E table
            shown = publish(tracker, parent, probes, "pretraining", probe_title(trained[0]), out)
            log.info("the pre-trained backbones' probes:\n%s", shown.to_markdown())
        return publish(tracker, parent, table, "setting", settings_title(study.finetune), out, describe)
