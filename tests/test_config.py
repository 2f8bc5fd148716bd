from pathlib import Path

import pytest
from pydantic import Field

from fewshot.config.loading import flatten, load_config, parse_override, to_yaml
from fewshot.config.schema import DataConfig, EpisodeSpec, ExperimentConfig, Strict
from fewshot.errors import ConfigError


class Train(Strict):
    lr: float = Field(1e-3, gt=0)
    optimizer: str = "adam"


class Run(Strict):
    train: Train = Train()
    episode: EpisodeSpec = EpisodeSpec()
    data: DataConfig = DataConfig()
    tags: tuple[str, ...] = ()


def test_defaults_then_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.01\nepisode:\n  way: 30\n")
    config = load_config(Run, path, ["train.lr=0.5", "episode.shot=5", "tags=[a, b]", "data.root=/data"])
    assert config.train.lr == 0.5  # override beats file
    assert config.episode.way == 30  # file beats default
    assert config.episode.shot == 5 and config.episode.query == 15
    assert config.tags == ("a", "b")
    assert config.data.root == Path("/data")


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' \(did you mean 'lr'\?\)"):
        load_config(Run, None, ["train.lrr=0.1"])
    path = tmp_path / "bad.yaml"
    path.write_text("episode:\n  wya: 5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'episode.wya'"):
        load_config(Run, path)


def test_bad_values_name_the_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"train.lr: .*greater than 0.*got -1"):
        load_config(Run, None, ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"episode.way: .*integer.*'many'"):
        load_config(Run, None, ["episode.way=many"])
    with pytest.raises(ConfigError, match=r"episode.way: .*greater than or equal to 2"):
        load_config(Run, None, ["episode.way=1"])


def test_malformed_overrides_and_files(tmp_path: Path) -> None:
    for bad in ("lr", "=3", "train..lr=1"):
        with pytest.raises(ConfigError, match=r"key\.sub=value"):
            parse_override(bad)
    with pytest.raises(ConfigError, match="'lr' is a value, not a section"):
        load_config(Run, None, ["train.lr=1", "train.lr.x=2"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+ is not valid YAML"):
        load_config(Run, broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Run, listed)


def test_override_values_are_parsed_as_yaml() -> None:
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("flag=true") == (["flag"], True)
    assert parse_override("name=adam") == (["name"], "adam")
    assert parse_override("root=") == (["root"], None)
    assert parse_override("ways=[5, 20]") == (["ways"], [5, 20]) and parse_override("m={a: 1}") == (["m"], {"a": 1})


def test_paths_and_strings_come_through_whole() -> None:
    """YAML would cut these (a comment, a mapping): the value stays the text the user wrote."""
    assert parse_override("output_dir=/runs/run #2") == (["output_dir"], "/runs/run #2")
    assert parse_override("output_dir=#2") == (["output_dir"], "#2")
    assert parse_override("data.root=/data/set: v2") == (["data", "root"], "/data/set: v2")
    config = load_config(ExperimentConfig, None, ["output_dir=/runs/run #2"])
    assert str(config.output_dir) == "/runs/run #2"


def test_configs_are_frozen_and_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_config(Run, None, ["train.lr=0.25", "data.root=/x"])
    with pytest.raises(ValueError):
        config.train.lr = 1.0  # type: ignore[misc]
    path = tmp_path / "dumped.yaml"
    path.write_text(to_yaml(config))
    assert load_config(Run, path) == config


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(load_config(Run, None, ["train.lr=0.25"]))
    assert flat["train.lr"] == 0.25
    assert flat["episode.way"] == 5
    assert flat["data.root"] is None


def test_ray_storage_is_local_unless_a_shared_storage_is_named(monkeypatch, tmp_path) -> None:
    from fewshot.paths import ray_storage

    monkeypatch.delenv("FEWSHOT_STORAGE", raising=False)
    assert ray_storage(tmp_path / "tune" / "study", tmp_path) == str(tmp_path / "tune" / "study")
    monkeypatch.setenv("FEWSHOT_STORAGE", "s3://bucket/ray/")
    assert ray_storage(tmp_path / "tune" / "study", tmp_path) == "s3://bucket/ray/tune/study"
    assert ray_storage(Path("/elsewhere/sweep/ray"), tmp_path) == "s3://bucket/ray/sweep/ray"
