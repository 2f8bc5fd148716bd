import logging
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fewshot.paths import absolute_uri, default_tracking_uri
from fewshot.tracking.runs import MlflowReporter, Tracker, using_tracking_uri


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_relative_store_uris_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_uri("store.db") == f"sqlite:///{tmp_path / 'store.db'}"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_sweep_is_a_parent_with_tagged_child_runs(tracker: Tracker, tmp_path: Path) -> None:
    with tracker.run("distance", "sweep") as parent:
        for distance in ("euclidean", "cosine"):
            with tracker.run("distance", distance, parent=parent, tags={"distance": distance, "seed": 0}) as child:
                tracker.log_params(child, {"model.distance": distance, "train.optim.lr": 1e-3})
                reporter = MlflowReporter(tracker, child)
                for epoch in (1, 2):
                    reporter.report(epoch, {"loss": 1.0 / epoch, "val_acc": 40.0 + epoch}, None)
    children = tracker.children(parent)
    assert [c.tags["distance"] for c in children] == ["euclidean", "cosine"]
    assert all(c.status == "FINISHED" and c.tags["seed"] == "0" and c.experiment == "distance" for c in children)
    assert children[0].params["model.distance"] == "euclidean"
    history = MlflowClient(tracker.uri).get_metric_history(children[0].run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 41.0), (2, 42.0)]
    experiment = MlflowClient(tracker.uri).get_experiment_by_name("distance")
    assert experiment.artifact_location == (tmp_path / "artifacts" / "distance").as_uri()


def test_a_failing_run_ends_failed_with_the_error(tracker: Tracker) -> None:
    with pytest.raises(RuntimeError), tracker.run("distance", "broken") as run_id:
        raise RuntimeError("worker died")
    run = MlflowClient(tracker.uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: worker died"


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_run_ends_killed(tracker: Tracker, interruption: type[BaseException]) -> None:
    with pytest.raises(interruption), tracker.run("distance", "stopped") as run_id:
        raise interruption
    assert MlflowClient(tracker.uri).get_run(run_id).info.status == "KILLED"


def test_artifacts_land_under_the_store(tracker: Tracker, tmp_path: Path) -> None:
    note = tmp_path / "table.md"
    note.write_text("| a |\n")
    with tracker.run("distance", "with-artifact") as run_id:
        tracker.log_artifact(run_id, note)
    assert (tmp_path / "artifacts" / "distance").is_dir()
    assert [f.path for f in MlflowClient(tracker.uri).list_artifacts(run_id)] == ["table.md"]


def test_reporter_skips_epochs_the_run_already_holds(tracker: Tracker) -> None:
    with tracker.run("distance", "restarted") as run_id:
        MlflowReporter(tracker, run_id).report(1, {"loss": 2.0}, None)
        MlflowReporter(tracker, run_id).report(2, {"loss": 1.5}, None)
        restarted = MlflowReporter(tracker, run_id)  # a worker restarted after logging epoch 2
        for epoch, loss in ((2, 1.5), (3, 1.0)):
            restarted.report(epoch, {"loss": loss}, None)
    history = MlflowClient(tracker.uri).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.5), (3, 1.0)]


def test_a_runs_data_is_logged_as_dataset_inputs(tracker: Tracker, tiny_builtin: Path, tmp_path: Path) -> None:
    import json

    from fewshot.data.cache import load_bank
    from fewshot.data.tables import open_split

    banks = [(role, load_bank(open_split(tiny_builtin, split), 32, False, tmp_path / "banks"))
             for role, split in (("train", "train"), ("selection", "val"), ("report", "test"))]  # fmt: skip
    with tracker.run("distance", "run") as run:
        tracker.log_datasets(run, banks)
    inputs = MlflowClient(tracker.uri).get_run(run).inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["mini/train", "mini/val", "mini/test"]
    assert [i.tags[0].value for i in inputs] == ["train", "selection", "report"]
    assert [i.dataset.digest for i in inputs] == [bank.digest for _, bank in banks]  # the decoded content's hash
    assert json.loads(inputs[2].dataset.source) == {"uri": str(tiny_builtin / "mini" / "test.csv")}
    assert json.loads(inputs[0].dataset.profile) == {"images": 160, "classes": 8, "image_size": 32}
    # another decode of other data has another digest: runs on different data are told apart
    other = load_bank(open_split(tiny_builtin, "train"), 16, True, tmp_path / "banks")
    assert other.digest != banks[0][1].digest and len(banks[0][1].digest) == 24


def test_runs_carry_their_commit_user_and_source(tracker: Tracker) -> None:
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    with tracker.run("distance", "run") as run:
        pass
    tags = MlflowClient(tracker.uri).get_run(run).data.tags
    assert tags["mlflow.source.git.commit"] == head.stdout.strip() and tags["git_sha"] == head.stdout.strip()[:7]
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "JOB"


def test_a_logged_model_loads_back_and_predicts_as_its_run(
    tracker: Tracker, tiny_builtin: Path, tmp_path: Path
) -> None:
    from importlib import metadata

    import mlflow
    import numpy as np
    import torch

    from fewshot.config.loading import load_config
    from fewshot.config.schema import ExperimentConfig
    from fewshot.data.predictions import read_predictions
    from fewshot.data.splits import load_fewshot_data
    from fewshot.methods.build import load_method
    from fewshot.methods.serving import EpisodeClassifier
    from fewshot.training.run import run
    from tests.conftest import tiny_overrides

    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, **{"train.epochs": 1}))
    result = run(config, tmp_path / "run")
    _, method = load_method(result.fit.best_checkpoint)
    report = load_fewshot_data(config.data, config.train_episode, config.eval_episode).report
    spec = config.eval_episode

    def images(episode) -> np.ndarray:  # support class by class, then the queries, as a file would give them
        return report.bank.images[torch.cat([episode.support, episode.query])].numpy()

    with tracker.run("distance", "run") as run_id:
        model_id = tracker.log_model(run_id, EpisodeClassifier(method, spec.way, spec.shot), images(report.episodes[0]))
        assert tracker.register_model(run_id, "fewshot-test") == 1
    assert tracker.get(run_id).tags["model_id"] == model_id
    with using_tracking_uri(tracker.uri):
        loaded = mlflow.pytorch.load_model("models:/fewshot-test/1")  # from the registry, by name and version
        served = mlflow.pyfunc.load_model(f"models:/{model_id}")  # what `mlflow models predict` runs
        version = mlflow.MlflowClient().get_model_version("fewshot-test", "1")
        requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{model_id}")).read_text().split()
    assert version.run_id == run_id
    # what an installer can find and this environment satisfies: the distributions' versions, no build tag
    assert {f"{name}=={metadata.version(name)}" for name in ("torch", "torchvision")} <= set(requirements)
    predicted = np.stack([loaded(torch.from_numpy(images(e))).argmax(1).numpy() for e in report.episodes])
    _, expected = read_predictions(result.outcome.predictions)
    assert np.array_equal(predicted, expected)  # the run's own predictions.csv, episode by episode
    logits = np.asarray(served.predict(images(report.episodes[1])))
    assert logits.shape == (spec.way * spec.query, spec.way) and np.array_equal(logits.argmax(1), expected[1])


@pytest.mark.parametrize("method", ["afhn", "hallucination"])
def test_every_methods_model_is_logged_and_loads_back(tracker: Tracker, method: str) -> None:
    """AFHN branches on its training stage, which MLflow's default torch.export cannot trace: it failed the
    sweep's AFHN runs once. Every method logs, loads and gives the same logits."""
    import mlflow
    import numpy as np
    import torch

    from fewshot.config.loading import load_config
    from fewshot.config.schema import ExperimentConfig
    from fewshot.methods.build import build_method
    from fewshot.methods.serving import EpisodeClassifier

    torch.manual_seed(0)
    config = load_config(ExperimentConfig, None, [f"method={method}", "data.image_size=32"])
    model = EpisodeClassifier(build_method(config), way=5, shot=1)
    episode = np.random.default_rng(0).integers(0, 255, (15, 3, 32, 32), dtype=np.uint8)
    with tracker.run("methods", method) as run_id:
        model_id = tracker.log_model(run_id, model, episode)
    with using_tracking_uri(tracker.uri):
        loaded = mlflow.pytorch.load_model(f"models:/{model_id}")
    torch.manual_seed(1)  # hallucination draws noise: the same draws for both
    expected = model(torch.from_numpy(episode))
    torch.manual_seed(1)
    assert torch.equal(loaded(torch.from_numpy(episode)), expected) and expected.shape == (10, 5)


def test_mlflows_pytorch_flavour_leaves_the_root_logger_alone() -> None:
    """Importing mlflow.pytorch puts an ERROR-level handler on the root logger: once, it silenced every job's
    progress log (the sweep's '[k/n] finished' lines). In a fresh interpreter, as a job would import it."""
    import subprocess
    import sys

    code = (
        "import logging; from fewshot.tracking.runs import _pytorch_flavour; _pytorch_flavour(); "
        "root = logging.getLogger(); print(len(root.handlers), root.level)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.stdout.split() == ["0", str(logging.WARNING)], done.stderr[-2000:]


@pytest.mark.parametrize("outside", [None, "sqlite:////srv/elsewhere.db"])
def test_logging_a_model_leaves_the_tracking_uri_and_environment_as_they_were(
    tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outside: str | None
) -> None:
    """``mlflow.set_tracking_uri`` writes ``$MLFLOW_TRACKING_URI``: once, logging a model left its store there,
    and every job a test started afterwards logged into that store instead of its own."""
    import mlflow
    import torch

    if outside is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", outside)
    own = default_tracking_uri(tmp_path / "results")
    with tracker.run("models", "linear") as run_id:
        tracker.log_model(run_id, torch.nn.Linear(4, 2), torch.zeros(3, 4).numpy())
    assert os.environ.get("MLFLOW_TRACKING_URI") == outside
    assert default_tracking_uri(tmp_path / "results") == own
    assert mlflow.get_tracking_uri() != tracker.uri


def test_a_logged_model_lives_with_its_run_not_in_the_working_folder(
    tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow puts a model logged by run id (no active run) in the Default experiment, its files in ./mlruns of
    whatever folder the process runs in: once, every run's model landed in the folder the job was started from."""
    import torch

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with tracker.run("models", "linear") as run_id:
        model_id = tracker.log_model(run_id, torch.nn.Linear(4, 2), torch.zeros(3, 4).numpy())
    client = MlflowClient(tracker.uri)
    model, run = client.get_logged_model(model_id), client.get_run(run_id)
    assert model.experiment_id == run.info.experiment_id and model.source_run_id == run_id
    assert model.artifact_location.startswith((tmp_path / "artifacts" / "models").as_uri())
    assert model.params == run.data.params
    assert not (elsewhere / "mlruns").exists()
