"""A data mistake stops a job at once with one line naming the file — before Ray or MLflow start, so no run is
left RUNNING and nothing is written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fewshot.tracking.tables import compare
from tests.conftest import job_env, run_script


def _job(script: str, *args: str, results: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = job_env(results.parent / "cache") | (env or {})
    return run_script(script, "--results", str(results), *args, env=environment, timeout=300)


@pytest.mark.parametrize("script", ["sweep_distance.py", "pretrain_byol.py", "finetune_office.py"])
def test_a_missing_image_folder_is_one_line_before_anything_starts(tmp_path: Path, script: str) -> None:
    for folder in ("mini", "office"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for split in ("train", "val"):
            (tmp_path / "data" / folder / f"{split}.csv").write_text("id,filename,label\n0,a.jpg,x\n")
    done = _job(script, "--data-root", str(tmp_path / "data"), results=tmp_path / "results")
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "train.csv: image folder" in line and "does not exist" in line
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()  # no MLflow store, no run folder, no Ray session


TRUNCATED = {  # job, its arguments, and the split whose image is cut short
    "sweep_distance.py": (["data.image_size=32"], "mini", "train"),
    "pretrain_byol.py": (["data.image_size=32"], "mini", "val"),
    "tune.py": (["--space", "tune_spaces/protonet-small.yaml", "data.image_size=32"], "mini", "test"),
    "finetune_office.py": (["--image-size", "32"], "office", "val"),
}


@pytest.mark.parametrize("script", TRUNCATED)
def test_a_truncated_image_is_named_before_ray_starts(tiny_builtin: Path, tmp_path: Path, script: str) -> None:
    import shutil

    args, folder, split = TRUNCATED[script]
    root = tmp_path / "data"
    for sub in ("mini", "office"):
        shutil.copytree(tiny_builtin / sub, root / sub)
    image = sorted((root / folder / split).iterdir())[1]
    image.write_bytes(image.read_bytes()[:300])  # a download cut short
    done = _job(script, "--data-root", str(root), *args, results=tmp_path / "results")
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {root / folder / f'{split}.csv'}: image {image} is corrupt or not an image")
    assert "Traceback" not in done.stderr and "Ray" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_an_office_label_missing_from_training_is_named(tiny_builtin: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "office").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "office" / split).symlink_to(tiny_builtin / "office" / split)
        frame = pd.read_csv(tiny_builtin / "office" / f"{split}.csv", dtype=str)
        if split == "val":
            frame.loc[0, "label"] = "bicycle"
        frame.to_csv(root / "office" / f"{split}.csv", index=False)
    (root / "mini").symlink_to(tiny_builtin / "mini")
    done = _job("finetune_office.py", "--data-root", str(root), results=tmp_path / "results")
    assert done.returncode == 2
    assert "val.csv: label 'bicycle' is not a class of the training split" in done.stderr
    assert not (tmp_path / "results").exists()


def test_a_sweep_whose_every_run_failed_has_an_empty_table() -> None:
    runs = pd.DataFrame({"run_id": ["a", "b"], "status": ["FAILED", "FAILED"], "distance": ["cosine", "euclidean"]})
    assert compare(runs, "distance").empty


@pytest.mark.parametrize(
    ("script", "args"),
    [("sweep_distance.py", ["no_such.key=1"]), ("pretrain_byol.py", ["train.epochs=0"]), ("reproduce.py", ["--x"])],
)
def test_a_mistake_in_the_arguments_is_answered_without_importing_ray_or_mlflow(
    tmp_path: Path, script: str, args: list[str]
) -> None:
    """Ray and MLflow take ~4 s to import: a job imports them once its flags and config are right, not before."""
    # every import, one stderr line each
    done = _job(script, *args, results=tmp_path / "results", env={"PYTHONPROFILEIMPORTTIME": "1"})
    imports = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in done.stderr.splitlines() if line and not line.startswith("import time:")]
    assert done.returncode == 2 and said[-1].startswith(("error:", script)), said[-3:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in imports}
    assert "fewshot.cli" in imported and not imported & {"ray", "mlflow"}
