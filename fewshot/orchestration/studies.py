"""The course reports' studies, each a :class:`Sweep` of configurations made from one base config: the distance
function, the shot K, the training way, the hallucinated features per support M, and the methods compared.
The sweep jobs (``jobs/sweep_*.py``) run one or two of them; ``jobs/reproduce.py`` runs them all at once.

What a study is and how its runs are scheduled are apart: nothing here imports Ray (``sweep`` trains the
runs), so a sweep job that stops at a mistake in its flags or config never imports Ray or MLflow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fewshot.config.schema import ExperimentConfig, TrainedConfig
from fewshot.data.splits import decode_splits


@dataclass(frozen=True)
class Variant:
    """One configuration of a sweep, its name and the MLflow tags that tell it apart (``distance``...)."""

    name: str
    config: TrainedConfig
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """Variants compared in one table: the MLflow experiment (``study``) and parent run (``name``) they are
    tracked in, and the tag (``group_by``) whose values are the table's rows."""

    study: str
    name: str
    group_by: str
    title: str
    variants: Sequence[Variant]

    def seeded(self, seeds: int) -> Sweep:
        """Each variant once per seed ``0..seeds-1`` (named ``<name>/seed<k>`` when there are several)."""
        variants = [
            Variant(f"{v.name}/seed{seed}" if seeds > 1 else v.name, v.config.model_copy(update={"seed": seed}), v.tags)
            for v in self.variants
            for seed in range(seeds)
        ]
        return replace(self, variants=variants)

    def check_data(self) -> None:
        """Read and check each dataset the variants train on, and decode its splits into the disk cache: a
        mistake, a corrupt or truncated image among them, is one line naming it before Ray starts (the runs
        then read the decoded splits, no second decode)."""
        for config in {variant.config.data: variant.config for variant in self.variants}.values():
            decode_splits(config.data, config.train_episode if isinstance(config, ExperimentConfig) else None)


DISTANCES = ("euclidean", "cosine", "relation", "transformed")
SHOTS = (1, 5, 10)
WAYS = (5, 20, 30)
MS = (10, 50, 100)
METHODS = ("protonet", "hallucination", "afhn", "afhn-report")

# The second course report's AFHN, as settings of the same module: a BCE discriminator blind to the class, the
# bounded anti-collapse form, the fake-feature loss warming up over two epochs, no encoder pre-training.
REPORT_AFHN = {
    "gan": "bce",
    "anti_collapse": "ratio",
    "anti_collapse_weight": 1.0,
    "classification_warmup": 2,
    "pretrain_epochs": 0,
}


def _episode(base: ExperimentConfig) -> str:
    return f"{base.eval_episode.way}-way {base.eval_episode.shot}-shot"


def with_distance(base: ExperimentConfig, distance: str) -> ExperimentConfig:
    return base.model_copy(update={"model": base.model.model_copy(update={"distance": distance})})


def with_shot(base: ExperimentConfig, shot: int) -> ExperimentConfig:
    """The same K in training and evaluation episodes."""
    return base.model_copy(
        update={
            "train_episode": base.train_episode.model_copy(update={"shot": shot}),
            "eval_episode": base.eval_episode.model_copy(update={"shot": shot}),
        }
    )


def with_way(base: ExperimentConfig, way: int) -> ExperimentConfig:
    """N-way training episodes; evaluation keeps its own way."""
    return base.model_copy(update={"train_episode": base.train_episode.model_copy(update={"way": way})})


def with_m(base: ExperimentConfig, m: int) -> ExperimentConfig:
    """Hallucination with M fake features per support, in training and evaluation alike."""
    hallucination = base.hallucination.model_copy(update={"m": m, "eval_m": None})
    return base.model_copy(update={"method": "hallucination", "hallucination": hallucination})


def with_method(base: ExperimentConfig, method: str) -> ExperimentConfig:
    """``afhn-report`` is AFHN with the second course report's settings (:data:`REPORT_AFHN`)."""
    if method == "afhn-report":
        return base.model_copy(update={"method": "afhn", "afhn": base.afhn.model_copy(update=REPORT_AFHN)})
    return base.model_copy(update={"method": method})


def _sweep(
    base: ExperimentConfig,
    values: Sequence[Any],
    make: Callable[[ExperimentConfig, Any], ExperimentConfig],
    label: str,
    tag: str,
    **sweep: str,
) -> Sweep:
    """A variant per value: ``make(base, value)``, named ``label.format(value)``, tagged ``tag=value``."""
    variants = [Variant(label.format(value), make(base, value), {tag: str(value)}) for value in values]
    return Sweep(group_by=tag, variants=variants, **sweep)  # study, name, title


def distance_sweep(base: ExperimentConfig, values: Sequence[str] = DISTANCES) -> Sweep:
    title = f"{_episode(base)} accuracy by distance"
    return _sweep(base, values, with_distance, "{}", "distance", study="distance", name="distance-sweep", title=title)


def shot_sweep(base: ExperimentConfig, values: Sequence[int] = SHOTS) -> Sweep:
    title = f"{base.eval_episode.way}-way accuracy by shot (train shot = test shot)"
    return _sweep(base, values, with_shot, "{}-shot", "shot", study="shots", name="shot-sweep", title=title)


def way_sweep(base: ExperimentConfig, values: Sequence[int] = WAYS) -> Sweep:
    title = f"{_episode(base)} accuracy by training way"
    return _sweep(base, values, with_way, "{}-way", "train_way", study="train-way", name="way-sweep", title=title)


def m_sweep(base: ExperimentConfig, values: Sequence[int] = MS) -> Sweep:
    title = f"{_episode(base)} accuracy by hallucinated features per support (M)"
    return _sweep(base, values, with_m, "M={}", "m", study="hallucination-m", name="m-sweep", title=title)


def method_sweep(base: ExperimentConfig, values: Sequence[str] = METHODS) -> Sweep:
    title = f"{_episode(base)} accuracy by method"
    return _sweep(base, values, with_method, "{}", "method", study="methods", name="method-comparison", title=title)


# Each few-shot study by the name ``jobs/reproduce.py`` and its profiles give it, with its values' type.
FEWSHOT_STUDIES: dict[str, tuple[Callable[..., Sweep], type]] = {
    "distance": (distance_sweep, str),
    "shots": (shot_sweep, int),
    "train-way": (way_sweep, int),
    "m": (m_sweep, int),
    "methods": (method_sweep, str),
}
