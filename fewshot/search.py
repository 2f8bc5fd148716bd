"""Declarative search spaces: a ``tune_spaces/*.yaml`` file says what a study searches and what it keeps fixed.

A space file names the method, ASHA's settings, a ``fixed:`` mapping of config
overrides applied to every trial, and ``params:``, one entry per searched config key::

    method: protonet
    samples: 12                # trials when --samples is not given
    asha: {grace_period: 2, reduction_factor: 3}
    fixed:
      train.epochs: 8          # ASHA's max_t
      train.episodes_per_epoch: 60
    params:
      train.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      train_episode.way: {type: int, low: 5, high: 30}
      train_episode.shot: {type: categorical, choices: [1, 5]}

Everything is checked when the file is read — types, bounds, and that every key and every value in range is a
valid setting of the method's config — so a typo is an error naming the file and key, before any trial starts.
This module knows nothing of Ray; :mod:`fewshot.orchestration.tune` turns a space into a Tune study.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from pydantic import Field, model_validator

from fewshot.config.loading import config_dict, read_yaml, set_nested, validate_config
from fewshot.config.schema import ExperimentConfig, FinetuneConfig, PretrainConfig, Strict, TrainedConfig
from fewshot.errors import ConfigError


class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)
    grid: list[float] | None = Field(None, min_length=1)  # the values an exhaustive grid tries

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log, self.grid)
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self

    def values(self) -> list[Any]:
        if self.grid is not None:
            return list(self.grid)
        if self.step is None:
            raise ValueError("is continuous: give it grid values or a step to grid-search it")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def examples(self) -> list[Any]:
        return [self.low, self.high, *(self.grid or [])]


class IntParam(Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)
    grid: list[int] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log, self.grid)
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined")
        return self

    def values(self) -> list[Any]:
        return list(self.grid) if self.grid is not None else list(range(self.low, self.high + 1, self.step))

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def examples(self) -> list[Any]:
        return [self.low, self.high, *(self.grid or [])]


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    def values(self) -> list[Any]:
        return list(self.choices)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)

    def examples(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
PARAM_TYPES = ("float", "int", "categorical")


class AshaConfig(Strict):
    """ASHA's settings (in epochs): every trial runs ``grace_period`` epochs before it can be stopped, and at
    each rung only the best ``1/reduction_factor`` go on. ``max_t`` is the trials' ``train.epochs``."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


Method = Literal["protonet", "hallucination", "afhn", "byol", "supervised", "finetune"]


def config_type(method: str) -> type[TrainedConfig]:
    """The config a method's runs are built from: few-shot methods, pre-training (byol, supervised), fine-tuning."""
    if method in ("byol", "supervised"):
        return PretrainConfig
    return FinetuneConfig if method == "finetune" else ExperimentConfig


class SearchSpace(Strict):
    """A study's search space; trials maximise the validation accuracy reported each epoch (``val_acc``)."""

    method: Method = "protonet"
    samples: int = Field(10, ge=1)
    asha: AshaConfig = AshaConfig()
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Param] = Field(min_length=1)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The space as Optuna distributions, keyed by config key."""
        return {key: param.distribution() for key, param in self.params.items()}

    def grid(self) -> dict[str, list[Any]]:
        """Every searched key's values for an exhaustive grid; continuous floats without a step are an error."""
        out = {}
        for key, param in self.params.items():
            try:
                out[key] = param.values()
            except ValueError as err:
                raise ConfigError(f"params.{key} {err}") from None
        return out

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def trial_config(self, params: dict[str, Any], base: TrainedConfig | None = None) -> TrainedConfig:
        """``base`` (default: the defaults), then ``fixed``, then one trial's sampled ``params``."""
        kind = config_type(self.method)
        data = config_dict(base if base is not None else kind())
        if "method" in kind.model_fields:
            data["method"] = self.method
        for key, value in {**self.fixed, **params}.items():
            set_nested(data, key.split("."), value, key)
        return validate_config(kind, data)

    def epochs(self, base: TrainedConfig | None = None) -> int:
        """Epochs of every trial: ASHA's ``max_t``."""
        return self.trial_config(self.midpoint(), base).train.epochs

    def midpoint(self) -> dict[str, Any]:
        return {key: param.examples()[0] for key, param in self.params.items()}


def load_space(path: Path | str, base: TrainedConfig | None = None) -> SearchSpace:
    """Read and fully check a space file; every mistake is a :class:`ConfigError` naming ``path`` and the key."""
    path = Path(path)
    space = validate_config(SearchSpace, read_yaml(path), str(path), tags=PARAM_TYPES)
    check_space(space, path, base)
    return space


def check_space(space: SearchSpace, source: Path | str, base: TrainedConfig | None = None) -> None:
    """Every fixed key and every searched key at each bound or choice must make a valid config."""
    try:
        space.trial_config({}, base)
    except ConfigError as err:
        raise ConfigError(f"{source}: fixed: {err}") from None
    for key, param in space.params.items():
        for value in param.examples():
            try:
                space.trial_config({key: value}, base)
            except ConfigError as err:
                raise ConfigError(f"{source}: params.{key} = {value!r}: {err}") from None


def grid_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Every point of the space's grid, in a fixed order."""
    grid = space.grid()
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def _check_bounds(low: float, high: float, log: bool, grid: list[Any] | None) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log-scaled range must be positive (low is {low})")
    outside = [value for value in grid or [] if not low <= value <= high]
    if outside:
        raise ValueError(f"grid values {outside} lie outside [{low}, {high}]")
