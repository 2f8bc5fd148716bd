"""Folders owned by one process at a time, and new folders that are never shared: two runs never write one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from fewshot.atomic import fresh_folder, owned
from fewshot.errors import ConfigError
from tests.conftest import REPO

HOLD = """
import sys, time
from fewshot.atomic import owned
with owned(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    """Another process that holds ``folder`` until it is killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_another_process_is_refused_until_that_process_dies(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "run")
    try:
        with (
            pytest.raises(ConfigError, match=rf"run is in use by another run \(pid {holder.pid} on "),
            owned(tmp_path / "run"),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # a holder that dies, without cleaning up, releases the folder
        holder.wait()
    with owned(tmp_path / "run") as folder:
        assert (folder / ".lock").read_text().startswith(f"pid {os.getpid()} ")


def test_within_one_process_a_second_hold_is_refused_too(tmp_path: Path) -> None:
    with owned(tmp_path), pytest.raises(ConfigError, match="in use by another run"), owned(tmp_path):
        pass
    with owned(tmp_path):  # released when the block ended
        pass


def test_fresh_folders_are_never_shared(tmp_path: Path) -> None:
    names = [fresh_folder(tmp_path / "distance-20261202-040000") for _ in range(3)]
    assert [p.name for p in names] == ["distance-20261202-040000", "distance-20261202-040000-2",
                                       "distance-20261202-040000-3"]  # fmt: skip
    assert all(p.is_dir() for p in names)


def test_a_sweep_folder_is_held_by_its_driver(tmp_path: Path) -> None:
    """A second driver resuming a sweep while the first still runs it is refused; the first is untouched."""
    from fewshot.orchestration.sweep import open_parent
    from fewshot.tracking.runs import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with ExitStack() as first:
        _, folder, resumed = open_parent(tracker, "distance", "sweep", "distance", tmp_path, False, first)
        assert not resumed and folder.parent == tmp_path / "distance"
        with ExitStack() as second, pytest.raises(ConfigError, match=f"{folder} is in use by another run"):
            open_parent(tracker, "distance", "sweep", "distance", tmp_path, True, second)
    with ExitStack() as later:  # the first driver ended: resuming works
        _, again, resumed = open_parent(tracker, "distance", "sweep", "distance", tmp_path, True, later)
    assert resumed and again == folder
