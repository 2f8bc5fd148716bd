"""Transfer learning as Ray jobs: pre-train a ResNet-50 backbone, fine-tune it on Office-Home, settings A–E.

A pre-training lives in a folder named after its config (``results/pretrain/<method>-<hash>``): running the
same config again reuses its finished ``backbone.pt``, or resumes it from ``last.pt`` if it was interrupted.
The settings study is one MLflow parent run (experiment ``office-settings``) with a child run per setting, the
pre-trainings it needed as child runs too, and the A–E table and plot on the parent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fewshot.config.loading import config_dict, to_yaml
from fewshot.config.schema import FinetuneConfig, PretrainConfig
from fewshot.data.splits import check_splits
from fewshot.data.tables import OFFICE_DIRS
from fewshot.errors import FewshotError
from fewshot.models.resnet import load_backbone, resnet50_backbone
from fewshot.orchestration.sweep import RUN_ID_FILE, Launch, Variant, connect_ray, run_variant
from fewshot.tracking.runs import Tracker
from fewshot.tracking.tables import GROUP_TAG, Comparison, compare, gather_runs, publish
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


def pretrain_dir(config: PretrainConfig, results: Path) -> Path:
    """Where a pre-training of ``config`` lives: its ``output_dir``, else a folder named by the config's hash."""
    if config.output_dir is not None:
        return Path(config.output_dir).expanduser().resolve()
    text = json.dumps(config_dict(config), sort_keys=True)
    return results / "pretrain" / f"{config.method}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def pretrain_backbone(config: PretrainConfig, launch: Launch) -> Path:
    """The ``backbone.pt`` of a finished pre-training of ``config``: reused if there is one, else trained as a
    Ray Train run as ``launch`` says (resuming an interrupted one)."""
    connect_ray()
    run_dir = pretrain_dir(config, launch.results)
    backbone = run_dir / "backbone.pt"
    if backbone.is_file() and (run_dir / "config.yaml").read_text() == to_yaml(config):
        log.info("%s pre-training already done: reusing %s", config.method, backbone)
        return backbone
    variant = Variant(f"pretrain-{config.method}", config, {"stage": "pretrain"})
    earlier = _interrupted_run(launch.tracker, run_dir)
    if earlier is not None:
        log.info("resuming the %s pre-training in %s (MLflow run %s)", config.method, run_dir, earlier)
    if not run_variant(variant, run_dir, launch, resume_run=earlier):
        raise FewshotError(f"{config.method} pre-training failed; its MLflow run's 'error' tag says why ({run_dir})")
    return backbone


def _interrupted_run(tracker: Tracker, run_dir: Path) -> str | None:
    """The MLflow run of an unfinished training in ``run_dir`` (it has a ``last.pt``), if ``tracker``'s store
    has it: the resumed training goes on logging there, one run with one history."""
    path = run_dir / RUN_ID_FILE
    if not (run_dir / "last.pt").is_file() or not path.is_file():
        return None
    run_id = path.read_text().strip()
    # a run of another store (MLFLOW_TRACKING_URI changed) or a deleted run: start a new one
    return run_id if tracker.exists(run_id) else None


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
        # Data and checkpoint mistakes fail here, before any training.
        train, val = check_splits(self.finetune.data, dirs=OFFICE_DIRS)
        class_targets(val, train.classes)
        sources = [getattr(self, kind) for kind in self.needed()]
        for data in {source.data for source in sources if isinstance(source, PretrainConfig)}:
            check_splits(data)
        for path in (source for source in sources if isinstance(source, Path)):
            load_backbone(resnet50_backbone(), path)

    def needed(self) -> list[str]:
        """The kinds of pre-trained backbone (``supervised``, ``ssl``) the settings use."""
        return [kind for kind in ("supervised", "ssl") if any(SETTINGS[s][0] == kind for s in self.settings)]


def run_office(study: OfficeStudy, tracker: Tracker, results: Path, num_workers: int = 1) -> Comparison:
    """Pre-train what the settings need, fine-tune once per setting, and publish the A–E table."""
    connect_ray()
    out = results / STUDY / f"settings-{study.settings}-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracker.run(STUDY, f"settings-{study.settings}", tags={"sweep": STUDY, GROUP_TAG: "setting"}) as parent:
        tracker.set_tags(parent, {"results_dir": out})
        launch = Launch(tracker, results, STUDY, parent, num_workers)
        backbones: dict[str, Path | None] = {"none": None}
        for kind in study.needed():
            source = getattr(study, kind)
            if isinstance(source, PretrainConfig):
                source = pretrain_backbone(source, launch)
            backbones[kind] = source
            tracker.set_tags(parent, {f"{kind}_backbone": source})
        for index, setting in enumerate(study.settings, 1):
            pretraining, finetuning = SETTINGS[setting]
            update = {"backbone": backbones[pretraining], "freeze": finetuning == "frozen"}
            config = study.finetune.model_copy(update=update)
            tags = {"setting": setting, "pretraining": PRETRAINING[pretraining], "finetuning": FINETUNING[finetuning]}
            name = f"{setting}: {tags['pretraining']}, {tags['finetuning']}"
            log.info("[%d/%d] setting %s", index, len(study.settings), name)
            run_variant(Variant(name, config, tags), out / setting, launch, prefix="office")
        describe = ("pretraining", "finetuning")
        table = compare(gather_runs(tracker, parent), "setting", describe)
        if table.empty:
            raise FewshotError("every setting failed; see the child runs' 'error' tags")
        size = study.finetune.data.image_size
        title = f"Office-Home validation accuracy by setting (ResNet-50, {size} px)"
        return publish(tracker, parent, table, "setting", title, out, describe)
