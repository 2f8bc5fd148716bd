"""Shared fixtures: an isolated cache folder, small datasets written in the layouts users bring, the jobs as
scripts, and one local Ray head that the tests which can share a cluster share."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psutil
import pytest
import ray
import torch
from torchvision.io import write_jpeg

from fewshot.data.transforms import EpisodeTensors
from fewshot.orchestration.sweep import LOCAL_RAY_ENV

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


@pytest.fixture(autouse=True, scope="session")
def local_ray_settings() -> Iterator[None]:
    """Every Ray a test starts (the shared head, a simulated cluster, a job's own local Ray) gets the settings
    that ``connect_ray`` gives a local Ray."""
    mp = pytest.MonkeyPatch()
    for name, value in LOCAL_RAY_ENV.items():
        mp.setenv(name, value)
    yield
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
    """Factory: a course-layout root (``mini/`` style by default) with train and val splits (and a test split
    of ``test_classes`` classes, when asked)."""

    def make(
        style: str = "mini",
        train_classes: int = 6,
        val_classes: int = 5,
        per_class: int = 6,
        size: int = 84,
        test_classes: int = 0,
    ) -> Path:
        folder = tmp_path / "hw4_data" / ("mini" if style == "mini" else "")
        write_split(folder, "train", [f"n{c:08d}" for c in range(train_classes)], per_class, size, seed=1)
        write_split(folder, "val", [f"n{c:08d}" for c in range(100, 100 + val_classes)], per_class, size, seed=2)
        if test_classes:
            classes = [f"n{c:08d}" for c in range(200, 200 + test_classes)]
            write_split(folder, "test", classes, per_class, size, seed=3)
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


def job_env(cache: Path, head: RayHead | None = None) -> dict[str, str]:
    """The environment of a job run as a script: the test's cache; on ``head``'s cluster, else a private Ray."""
    base = head.env if head is not None else {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return base | {"FEWSHOT_CACHE": str(cache)}


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``python jobs/<script> args...`` from the repository root, its output captured."""
    command = [sys.executable, f"jobs/{script}", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    address: str  # the cluster's GCS address: for ray.init and RAY_ADDRESS
    dashboard: str  # for ray job submit
    env: dict[str, str]  # what a process joining it needs: the venv on PATH, auth off, RAY_ADDRESS


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One ``ray start --head`` (2 CPUs, auth disabled: a loopback-only cluster) for every test that can share a
    cluster; the fault tests start their own. ``--block`` keeps it in the foreground: stopping it stops its own
    processes and only those (``ray stop`` would stop every Ray on the machine)."""
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    start = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
             # its own agent port: the default one may belong to another Ray on this machine (then no job agent)
             f"--dashboard-agent-listen-port={free_port()}"]  # fmt: skip
    process = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address, api = f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
    # RAY_API_SERVER_ADDRESS: the state API of Ray's own helpers (Train's placement-group cleaner) finds this
    # cluster, not another one running beside it (a fault test's)
    head = RayHead(address, api, {**env, "RAY_ADDRESS": address, "RAY_API_SERVER_ADDRESS": api})
    try:
        _wait_for_dashboard(head.dashboard, process)
        yield head
    finally:
        _stop_tree(process)
        current = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would clean up after this head
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.fixture(scope="module")
def shared_ray(ray_head: RayHead) -> Iterator[RayHead]:
    """This test process connected to the shared head for the module's tests."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_API_SERVER_ADDRESS", ray_head.dashboard)
    ray.init(address=ray_head.address)
    yield ray_head
    ray.shutdown()
    patch.undo()


def _stop_tree(process: subprocess.Popen, grace: float = 10) -> None:
    """Stop a ``ray start --block`` head: SIGINT lets it stop its own processes, which took 2 s after a few tests
    but 60 s at the end of the suite; past ``grace`` seconds the head and every process it started are killed."""
    family = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        family += psutil.Process(process.pid).children(recursive=True)
        process.kill()
        process.wait()
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _wait_for_dashboard(address: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard at {address} did not answer in {timeout:.0f}s")
