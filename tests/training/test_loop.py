import os
from pathlib import Path

import pytest
import torch

from fewshot.checkpoint import load_checkpoint
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.data.episodes import EpisodeSampler
from fewshot.data.splits import load_fewshot_data
from fewshot.data.transforms import BatchTransform, episode_tensors
from fewshot.errors import ConfigError
from fewshot.methods.build import build_method
from fewshot.training.loop import Trainer
from fewshot.training.run import run
from fewshot.training.tasks import EpisodeTask
from tests.conftest import StopAfter, run_script, tiny_overrides


def _config(root: Path, **extra: object) -> ExperimentConfig:
    return load_config(ExperimentConfig, None, tiny_overrides(root, **extra))


def _accuracy(method, bank, episodes) -> float:
    method.eval()
    with torch.no_grad():
        batches = (episode_tensors(e, bank, BatchTransform()) for e in episodes)
        hits = [(method.logits(b).argmax(1) == b.query_labels).float().mean().item() for b in batches]
    return sum(hits) / len(hits)


def test_training_lowers_the_loss_on_builtin_data(tiny_builtin: Path, tmp_path: Path) -> None:
    config = _config(tiny_builtin, **{"train.epochs": 4, "train.episodes_per_epoch": 10})
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    torch.manual_seed(0)
    method = build_method(config)
    # Held-out episodes of the training classes (a seed the run never draws with).
    sampler = EpisodeSampler(data.train.labels, data.train.classes, config.train_episode, seed=123)
    episodes = [sampler[i] for i in range(20)]
    before = _accuracy(method, data.train, episodes)
    result = Trainer(config, method, EpisodeTask(config, data), tmp_path).fit()
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert _accuracy(method, data.train, episodes) > before + 0.08


def test_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tiny_builtin: Path, tmp_path: Path) -> None:
    config = _config(tiny_builtin, **{"train.epochs": 3})
    straight = run(config, tmp_path / "straight")

    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "resumed", reporter=StopAfter(1))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed = run(config, tmp_path / "resumed")  # picks up last.pt by itself

    assert [h["epoch"] for h in resumed.fit.history] == [1, 2, 3]
    a = load_checkpoint(straight.fit.last_checkpoint)["model"]
    b = load_checkpoint(resumed.fit.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.score is not None and straight.score is not None
    assert resumed.score.mean == straight.score.mean


def test_a_run_folder_of_another_config_is_not_resumed(tiny_builtin: Path, tmp_path: Path) -> None:
    first = run(_config(tiny_builtin, **{"train.epochs": 1}), tmp_path)
    kept = {name: (tmp_path / name).read_bytes() for name in ("last.pt", "config.yaml", "predictions.csv")}
    other = _config(tiny_builtin, **{"train.epochs": 1, "train.optim.lr": 0.01})
    with pytest.raises(ConfigError, match=r"1 key\(s\) differ: train\.optim\.lr: 0\.001 -> 0\.01\); .* --restart"):
        run(other, tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in kept} == kept  # the first run untouched
    replaced = run(other, tmp_path, restart=True)  # asked for: start over in the same folder
    assert load_checkpoint(tmp_path / "last.pt")["config"]["train"]["optim"]["lr"] == 0.01
    assert replaced.fit.history[0]["loss"] != first.fit.history[0]["loss"]


def test_a_run_folder_is_owned_by_one_run_at_a_time(tiny_builtin: Path, tmp_path: Path) -> None:
    from fewshot.atomic import owned

    out = tmp_path / "run"
    with owned(out):  # another run holds the folder
        job = run_script("train.py", *tiny_overrides(tiny_builtin), f"output_dir={out}", timeout=300)
        assert job.returncode == 2, job.stderr[-2000:]
        line = job.stderr.strip().splitlines()[-1]  # after the data's log lines
        assert "Traceback" not in job.stderr and line.startswith(
            f"error: {out} is in use by another run (pid {os.getpid()} on "
        )
        assert not (out / "config.yaml").exists()
    done = run_script(
        "train.py", *tiny_overrides(tiny_builtin, **{"train.epochs": 1}), f"output_dir={out}", timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]  # released: the folder is free again


def test_best_checkpoint_holds_the_best_validation_epoch(tiny_builtin: Path, tmp_path: Path) -> None:
    result = run(_config(tiny_builtin, **{"train.epochs": 3}), tmp_path)
    accs = [h["val_acc"] for h in result.fit.history]
    assert result.fit.best_val_acc == max(accs)
    assert result.fit.best_epoch == accs.index(max(accs)) + 1
    assert load_checkpoint(result.fit.best_checkpoint)["epoch"] == result.fit.best_epoch
    for name in ("config.yaml", "last.pt", "best.pt", "predictions.csv"):
        assert (tmp_path / name).is_file()
    assert load_config(ExperimentConfig, tmp_path / "config.yaml") == _config(tiny_builtin, **{"train.epochs": 3})


def test_schedule_halves_the_learning_rate(tiny_builtin: Path, tmp_path: Path) -> None:
    config = _config(
        tiny_builtin,
        **{"train.epochs": 3, "train.schedule.step_epochs": 1, "train.optim.name": "sgd", "train.optim.lr": 0.1},
    )
    result = run(config, tmp_path)
    assert [h["lr"] for h in result.fit.history] == pytest.approx([0.1, 0.05, 0.025])
