"""Search-space files: the shipped ones are valid, a malformed one is an error naming the key."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig, FinetuneConfig, PretrainConfig
from fewshot.errors import ConfigError
from fewshot.search import grid_points, load_space

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


VALID = """
method: protonet
samples: 5
fixed:
  train.epochs: 4
params:
  train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, grid: [1.0e-3, 1.0e-2]}
  train_episode.way: {type: int, low: 5, high: 30, grid: [5, 20]}
  train_episode.shot: {type: categorical, choices: [1, 5]}
"""


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path: Path) -> None:
    space = load_space(path)
    assert space.params and space.epochs() >= 1
    space.trial_config(space.midpoint())


def test_protonet_space_searches_what_the_course_asks() -> None:
    space = load_space(SPACES / "protonet.yaml")
    way = space.params["train_episode.way"]
    assert (way.low, way.high) == (5, 30)
    assert space.params["train.optim.lr"].log and "train.optim.weight_decay" in space.params
    assert "train_episode.shot" in space.params
    assert space.trial_config(space.midpoint()).train.val_every == 1  # ASHA needs a score every epoch


def test_byol_and_finetune_spaces_build_their_own_configs() -> None:
    byol = load_space(SPACES / "byol.yaml")
    assert {"train.optim.lr", "byol.tau_base"} <= set(byol.params) and byol.params["train.optim.lr"].log
    config = byol.trial_config({"byol.tau_base": 0.95})
    assert isinstance(config, PretrainConfig) and config.method == "byol" and config.byol.tau_base == 0.95
    finetune = load_space(SPACES / "finetune.yaml").trial_config({"lr_scale.stem": 0.1})
    assert isinstance(finetune, FinetuneConfig) and finetune.lr_scale["stem"] == 0.1


def test_a_key_of_another_kind_of_run_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("method: byol\nparams:\n  train_episode.way: {type: int, low: 5, high: 30}\n")
    with pytest.raises(ConfigError, match=r"params.train_episode.way = 5: unknown key 'train_episode'"):
        load_space(path)


def test_space_becomes_optuna_distributions_and_a_grid(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, VALID))
    dists = space.distributions()
    assert dists["train.optim.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["train_episode.way"] == optuna.distributions.IntDistribution(5, 30)
    assert dists["train_episode.shot"] == optuna.distributions.CategoricalDistribution((1, 5))
    points = grid_points(space)
    assert len(points) == space.grid_size() == 8
    assert {"train.optim.lr": 1e-3, "train_episode.way": 20, "train_episode.shot": 5} in points


def test_trial_config_applies_base_then_fixed_then_params(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, VALID))
    base = load_config(ExperimentConfig, None, ["train.epochs=9", "seed=3", "train.episodes_per_epoch=7"])
    config = space.trial_config({"train.optim.lr": 0.002, "train_episode.way": 12, "train_episode.shot": 5}, base)
    assert config.train.epochs == 4  # fixed beats base
    assert config.seed == 3 and config.train.episodes_per_epoch == 7  # base kept where the space is silent
    assert (config.train.optim.lr, config.train_episode.way, config.train_episode.shot) == (0.002, 12, 5)
    assert config.eval_episode.way == 5


def test_best_config_yaml_round_trips(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, VALID))
    config = space.trial_config(space.midpoint())
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert load_config(ExperimentConfig, tmp_path / "best.yaml") == config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params:\n  train.optim.lrr: {type: float, low: 0.1, high: 1}", "params.train.optim.lrr"),
        ("params:\n  train.optim.lr: {type: float, low: 1, high: 0.1}", "params.train.optim.lr: low (1.0)"),
        ("params:\n  train.optim.lr: {type: float, low: 0, high: 1, log: true}", "must be positive"),
        ("params:\n  train.optim.lr: {type: double, low: 0, high: 1}", "type must be one of"),
        ("params:\n  train.optim.lr: {low: 0, high: 1}", "params.train.optim.lr: needs a type"),
        ("params:\n  train.optim.lr: {type: float, low: 0.1, high: 1, hgih: 2}", "key 'params.train.optim.lr.hgih'"),
        ("params:\n  train_episode.way: {type: categorical, choices: []}", "params.train_episode.way.choices"),
        ("params:\n  train_episode.way: {type: int, low: 5, high: 9, grid: [4]}", "outside [5, 9]"),
        ("params:\n  train_episode.way: {type: int, low: 1, high: 9}", "params.train_episode.way = 1"),
        ("params:\n  train_episode.way: {type: categorical, choices: [5, x]}", "params.train_episode.way = 'x'"),
        ("fixed: {train.epoch: 3}\nparams:\n  train.optim.lr: {type: float, low: 0.1}", "high"),
        ("fixed: {train.epoch: 3}\nparams:\n  train.optim.lr: {type: float, low: 0.1, high: 1}", "fixed: unknown"),
        ("params: {}", "params"),
        ("samples: 0\nparams:\n  train.optim.lr: {type: float, low: 0.1, high: 1}", "samples"),
        ("metric: loss\nparams:\n  train.optim.lr: {type: float, low: 0.1, high: 1}", "unknown key 'metric'"),
        ("- a\n- b", "top level must be a mapping"),
        ("params: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_malformed_space_is_an_error_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_space_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml not found"):
        load_space(tmp_path / "nope.yaml")


def test_a_continuous_param_without_grid_values_cannot_be_grid_searched(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path, "params:\n  train.optim.lr: {type: float, low: 0.001, high: 0.1}"))
    with pytest.raises(ConfigError, match=r"params.train.optim.lr is continuous"):
        space.grid()
    stepped = load_space(_space(tmp_path, "params:\n  train.optim.lr: {type: float, low: 0.1, high: 0.3, step: 0.1}"))
    assert stepped.grid() == {"train.optim.lr": [0.1, 0.2, 0.3]}


def test_afhn_space_searches_the_paper_and_the_report_variant() -> None:
    space = load_space(SPACES / "afhn.yaml")
    assert space.params["afhn.gan"].choices == ["wgan-gp", "bce"]
    assert space.params["afhn.anti_collapse"].choices == ["paper", "ratio"]
    config = space.trial_config({**space.midpoint(), "afhn.gan": "bce", "afhn.anti_collapse": "ratio"})
    assert (config.afhn.gan, config.afhn.anti_collapse) == ("bce", "ratio")
