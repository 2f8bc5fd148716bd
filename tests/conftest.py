"""Shared fixtures: an isolated cache folder, and small datasets written in the layouts users bring."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torchvision.io import write_jpeg

from fewshot.data.transforms import EpisodeTensors

REPO = Path(__file__).resolve().parents[1]


def load_job(name: str) -> ModuleType:
    """The entry point ``jobs/<name>.py`` as a module (jobs are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"jobs_{name}", REPO / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own $FEWSHOT_CACHE, so tests never read or fill the user's cache."""
    path = tmp_path_factory.mktemp("fewshot-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEWSHOT_CACHE", str(path))
    yield path
    mp.undo()


def write_split(folder: Path, split: str, classes: list[str], per_class: int, size: int = 84, seed: int = 0) -> Path:
    """Write ``folder/<split>.csv`` (id,filename,label) and ``folder/<split>/*.jpg``; returns the CSV path.

    Each class has its own mean colour, so tests can tell images apart after decoding.
    """
    generator = torch.Generator().manual_seed(seed)
    (folder / split).mkdir(parents=True, exist_ok=True)
    lines = ["id,filename,label"]
    for c, label in enumerate(classes):
        for k in range(per_class):
            image = torch.randint(0, 60, (3, size, size), generator=generator, dtype=torch.uint8) + 30 * (c % 6)
            name = f"{label}_{k:03d}.jpg"
            write_jpeg(image, str(folder / split / name), quality=95)
            lines.append(f"{len(lines) - 1},{name},{label}")
    csv_path = folder / f"{split}.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


@pytest.fixture
def course_data(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a course-layout root (``mini/`` style by default) with train and val splits."""

    def make(
        style: str = "mini", train_classes: int = 6, val_classes: int = 5, per_class: int = 6, size: int = 84
    ) -> Path:
        folder = tmp_path / "hw4_data" / ("mini" if style == "mini" else "")
        write_split(folder, "train", [f"n{c:08d}" for c in range(train_classes)], per_class, size, seed=1)
        write_split(folder, "val", [f"n{c:08d}" for c in range(100, 100 + val_classes)], per_class, size, seed=2)
        return tmp_path / "hw4_data"

    return make


TINY_SPEC = dict(
    train_classes=8,
    val_classes=5,
    test_classes=5,
    images_per_class=20,
    image_size=32,
    office_classes=3,
    office_train_per_class=2,
    office_val_per_class=1,
    office_image_size=32,
)


@pytest.fixture(scope="session")
def tiny_builtin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built-in dataset (8/5/5 classes of 20 images, 32x32), generated once per test session."""
    from fewshot.data.builtin import BuiltinSpec, ensure_builtin

    return ensure_builtin(BuiltinSpec(**TINY_SPEC), root=tmp_path_factory.mktemp("builtin") / "tiny")


def tiny_overrides(root: Path, **extra: object) -> list[str]:
    """Overrides for a seconds-long ProtoNet run on :func:`tiny_builtin`."""
    values = {
        "data.root": root,
        "data.image_size": 32,
        "data.n_val_episodes": 20,
        "train.epochs": 2,
        "train.episodes_per_epoch": 6,
        "train.val_episodes": 10,
        "train.log_every": 3,
        "train.device": "cpu",
        # 10 queries: not the shape of the built-in val_testcase.csv (15), so the runs use 20 generated episodes
        "eval_episode.query": 10,
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def random_episode(way: int = 3, shot: int = 2, query: int = 4, size: int = 8) -> EpisodeTensors:
    """A seeded episode of random ``size``-pixel images, class-major, for method tests."""
    torch.manual_seed(0)
    return EpisodeTensors(
        support=torch.randn(way * shot, 3, size, size),
        support_labels=torch.arange(way).repeat_interleave(shot),
        query=torch.randn(way * query, 3, size, size),
        query_labels=torch.arange(way).repeat_interleave(query),
        way=way,
        shot=shot,
    )


class StopAfter:
    """A reporter that interrupts the run after ``epoch`` (its checkpoint is already saved), like a Ctrl-C."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def report(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt
