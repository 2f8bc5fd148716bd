"""``jobs/finetune_office.py`` through Ray Train and MLflow on tiny data: pre-trainings, settings A–E, table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import RayHead, job_env, run_script

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TINY = ["--epochs", "1", "--pretrain-epochs", "1", "--image-size", "16", "--batch-size", "4",
        "pretrain.train.batch_size=40", "pretrain.data.n_val_episodes=10", "pretrain.train.val_episodes=5",
        "pretrain.eval_episode.query=5", "pretrain.byol.hidden=64", "pretrain.byol.projection=16"]  # fmt: skip


def _run(args: list[str], env: dict[str, str] | None = None):
    return run_script("finetune_office.py", *args, env=env)


def test_settings_a_to_e_pretrain_finetune_and_publish_the_table(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    results = tmp_path / "results"
    env = job_env(isolated_cache, ray_head)
    done = _run(["--data-root", str(tiny_builtin), "--results", str(results), *TINY], env)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("office-settings")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    settings = {r.data.tags["setting"]: r for r in children if "setting" in r.data.tags}
    pretrainings = {r.data.tags["method"] for r in children if r.data.tags.get("stage") == "pretrain"}
    assert set(settings) == set("ABCDE") and pretrainings == {"byol", "supervised"}
    assert all(r.info.status == "FINISHED" for r in children)
    first, second = (r.info for r in children if r.data.tags.get("stage") == "pretrain")
    assert first.start_time < second.end_time and second.start_time < first.end_time  # trained at once
    assert settings["A"].data.params["backbone"] == "None"
    assert settings["B"].data.params["backbone"] == settings["D"].data.params["backbone"] != "None"
    assert "/byol-" in settings["C"].data.params["backbone"] and settings["E"].data.params["freeze"] == "True"
    assert {a.path for a in client.list_artifacts(settings["C"].info.run_id)} >= {"predictions.csv", "scores.csv"}
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison-setting.csv", "comparison-setting.md", "comparison-setting.png"} <= parent_files
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "comparison-setting.csv", str(tmp_path)))
    assert table["setting"].tolist() == list("ABCDE")
    assert table["pretraining"].tolist()[:3] == ["none (random init)", "supervised", "BYOL (no labels)"]
    assert table["paired"].iloc[0] == "reference" and table["delta"].iloc[1:].notna().all()  # vs A, image by image
    assert not {"untrained", "linear", "untrained_linear"} & set(table)  # the pre-trainings' probes: their table
    assert "| A " in done.stdout and "classifier only" in done.stdout
    assert "ResNet-18, 16 px" in done.stdout  # the CPU setting's network, named in the title
    # Each pre-trained backbone's probe beside its untrained floor: both pre-trainings start from the same
    # seed's init of the same network, so their floors are one measurement and must agree to the digit.
    probes = pd.read_csv(client.download_artifacts(parent.info.run_id, "comparison-pretraining.csv", str(tmp_path)))
    assert set(probes["pretraining"]) == {"supervised", "BYOL (no labels)"}
    assert probes["untrained"].nunique() == 1 and probes["untrained"].iloc[0].split(" ± ")[0] != "nan"
    assert "### Backbone probes: 5-way 1-shot nearest prototype (ResNet-18, 16 px)" in done.stderr
    floors = {r.data.metrics["random_backbone_acc"] for r in children if r.data.tags.get("stage") == "pretrain"}
    assert len(floors) == 1
    # and the linear probe of each backbone on held-out images of the same split, beside its untrained floor's
    assert probes["untrained_linear"].nunique() == 1 and probes["linear"].str.contains(" ± ").all()
    pretrained = [r.data.metrics for r in children if r.data.tags.get("stage") == "pretrain"]
    assert len({m["random_backbone_linear_acc"] for m in pretrained}) == 1
    assert all(0 <= m["linear_probe_acc"] <= 100 for m in pretrained)
    assert "linear probe, held-out images (%)" in done.stderr

    _models_predict_as_their_runs(client, settings["C"], runs, tiny_builtin, isolated_cache, tmp_path)

    # Again, settings D and E only, after the supervised pre-training was interrupted (its backbone not yet
    # written, its run KILLED by Ctrl-C): the finished BYOL pre-training is reused, not trained again; the
    # supervised one resumes from its last.pt in its own MLflow run, now a child of the new study.
    (supervised,) = [
        r for r in runs if r.data.tags.get("stage") == "pretrain" and r.data.tags["method"] == "supervised"
    ]
    run_dir = Path(settings["B"].data.params["backbone"]).parent
    (run_dir / "backbone.pt").unlink()
    client.set_terminated(supervised.info.run_id, "KILLED")
    again = _run(["--data-root", str(tiny_builtin), "--results", str(results), "--settings", "de", *TINY], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "byol pre-training already done: reusing" in again.stderr
    assert "resuming the supervised pre-training" in again.stderr
    runs = client.search_runs([experiment.experiment_id])
    assert sum(r.data.tags.get("stage") == "pretrain" for r in runs) == 2  # no new pre-training run
    resumed = client.get_run(supervised.info.run_id)
    newest = max((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["mlflow.parentRunId"] == newest.info.run_id
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "loss")] == [1]  # epoch 1, logged once
    assert (run_dir / "backbone.pt").is_file()


def test_a_bad_checkpoint_is_a_one_line_error_before_training(tmp_path: Path) -> None:
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a checkpoint")
    done = _run(["--settings", "BD", "--supervised", str(bad), "--results", str(tmp_path)])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint {bad} is truncated or corrupt")
    assert not (tmp_path / "office-settings").exists()


def test_resuming_settings_that_never_ran_is_a_one_line_error(tiny_builtin: Path, tmp_path: Path) -> None:
    done = _run(["--settings", "A", "--resume", "--data-root", str(tiny_builtin), "--results", str(tmp_path), *TINY])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: no settings-A to resume in sqlite:///")


def _models_predict_as_their_runs(client, setting, runs, data: Path, cache: Path, tmp_path: Path) -> None:
    """A setting's logged model gives its run's predictions.csv; a pre-training's gives the features of its
    network (the CPU setting's ResNet-18: 512-d)."""
    import mlflow
    import torch

    from fewshot.data.cache import load_bank
    from fewshot.data.tables import OFFICE_DIRS, open_split
    from fewshot.tracking.runs import using_tracking_uri

    val = load_bank(open_split(data, "val", OFFICE_DIRS), 16, resize=True, cache_dir=cache / "banks")
    train_classes = list(dict.fromkeys(pd.read_csv(data / "office" / "train.csv")["label"]))  # first appearance
    pretraining = next(r for r in runs if r.data.tags.get("stage") == "pretrain")
    with using_tracking_uri(client.tracking_uri):
        classifier = mlflow.pytorch.load_model(f"models:/{setting.data.tags['model_id']}")
        backbone = mlflow.pytorch.load_model(f"models:/{pretraining.data.tags['model_id']}")
    predicted = [train_classes[i] for i in classifier(val.images).argmax(1).tolist()]
    written = pd.read_csv(client.download_artifacts(setting.info.run_id, "predictions.csv", str(tmp_path)))
    assert predicted == written["label"].tolist()
    assert backbone(val.images[:3]).shape == torch.Size([3, 512])
