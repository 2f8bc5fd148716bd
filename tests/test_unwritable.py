"""A folder that cannot be written — an output folder, its parent, the results folder, the cache, a predictions
path — ends in one line naming it before any work, or, for a cache, in a right result without one."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from fewshot.data.cache import load_bank
from fewshot.data.tables import open_split
from fewshot.paths import writable
from tests.conftest import job_env, run_script, tiny_overrides


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A folder no file can be made in: under /sys when the tests run as root (root ignores permission bits),
    else a folder without write permission."""
    if os.geteuid() == 0:
        folder = Path("/sys/fewshot-unwritable")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if writable(folder):
        pytest.skip(f"{folder} can be written here")
    return folder


def _error_line(done) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_an_unwritable_output_dir_is_one_line_before_the_data_is_read(tiny_builtin: Path, unwritable: Path) -> None:
    out = unwritable / "runs" / "a"  # neither it nor its parent exists, and they cannot be made
    started = time.monotonic()
    done = run_script("train.py", *tiny_overrides(tiny_builtin), f"output_dir={out}", timeout=300)
    assert _error_line(done).startswith(f"error: output_dir {out} cannot be written (")
    assert "data:" not in done.stderr and time.monotonic() - started < 60  # nothing was decoded or trained


def test_an_unwritable_results_folder_stops_a_sweep_before_ray(tmp_path: Path, unwritable: Path) -> None:
    done = run_script("sweep_distance.py", "--results", str(unwritable / "results"), env=job_env(tmp_path / "cache"))
    assert _error_line(done).startswith(f"error: results folder {unwritable / 'results'} cannot be written (")
    assert "Ray" not in done.stderr


def test_predict_checks_its_output_path_before_computing(tiny_builtin: Path, tmp_path: Path, unwritable: Path) -> None:
    from fewshot.checkpoint import save_checkpoint
    from fewshot.config.loading import config_dict, load_config
    from fewshot.config.schema import ExperimentConfig
    from fewshot.methods.build import build_method

    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin))
    save_checkpoint(tmp_path / "best.pt", {"epoch": 1, "model": build_method(config).state_dict(),
                                           "config": config_dict(config)})  # fmt: skip
    mini = tiny_builtin / "mini"
    common = [str(mini / "val.csv"), str(mini / "val"), str(mini / "val_testcase.csv")]
    done = run_script("predict.py", *common, str(unwritable / "p.csv"), "--checkpoint", str(tmp_path / "best.pt"))
    assert _error_line(done).startswith(f"error: the folder of the predictions file {unwritable} cannot be written")
    assert "wrote" not in done.stdout
    folder = run_script("predict.py", *common, str(tmp_path), "--checkpoint", str(tmp_path / "best.pt"))
    assert _error_line(folder) == f"error: {tmp_path} is a folder: give the predictions CSV's file name"


def test_a_read_only_cache_still_decodes_right(tiny_builtin: Path, tmp_path: Path, unwritable: Path) -> None:
    table = open_split(tiny_builtin, "val")
    cached = load_bank(table, 32, False, tmp_path / "banks")
    in_memory = load_bank(table, 32, False, unwritable / "banks")  # cannot keep it: decoded for this call
    assert np.array_equal(in_memory.images.numpy(), cached.images.numpy()) and in_memory.ids == cached.ids
    assert not (unwritable / "banks").exists()
