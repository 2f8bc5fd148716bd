"""The typed configs: frozen pydantic models that reject unknown keys and validate every value.

A typo (``train.lrr=0.1``) is an error naming the key, never a silently ignored setting; reading configs from
YAML and ``key=value`` overrides is :mod:`fewshot.config.loading`'s work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated, instances frozen.

    A section given in part keeps the rest of its default: ``train: {epochs: 3}`` changes the epochs of a
    ``FinetuneConfig``'s training defaults, it does not reset its learning rate to ``BatchTrainConfig``'s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _complete_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(field.default, BaseModel) and isinstance(merged.get(name), dict):
                merged[name] = _merge(field.default.model_dump(), merged[name])
        return merged


class EpisodeSpec(Strict):
    """The shape of an episode: ``way`` classes, ``shot`` support and ``query`` query images per class.

    The one episode type of fewshot, validated once here: configs hold it (``train_episode``), samplers draw
    it, testcase files are read as it.
    """

    way: int = Field(5, ge=2)
    shot: int = Field(1, ge=1)
    query: int = Field(15, ge=1)

    def __str__(self) -> str:
        return f"{self.way}-way {self.shot}-shot {self.query}-query"


class DataConfig(Strict):
    """Where the images are and how to decode them. ``root: null`` uses the built-in dataset."""

    root: Path | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = "test"  # when the data has it, scores are reported on it (null: never)
    val_episodes: Path | None = None  # testcase CSV; default: <split dir>/val_testcase.csv, else generated
    test_episodes: Path | None = None  # testcase CSV; default: <split dir>/test_testcase.csv, else generated
    n_val_episodes: int = Field(600, ge=1)  # when fixed episodes are generated
    image_size: int = Field(84, ge=8)
    resize: bool = False  # resize images of another size when decoding (else they are an error)
    cache_dir: Path | None = None  # decoded-image cache; default: $FEWSHOT_CACHE/banks


class ModelConfig(Strict):
    """Encoder, optional head and distance of a metric-based few-shot model."""

    encoder: Literal["conv4"] = "conv4"
    hidden: int = Field(64, ge=1)  # Conv4 channels
    head: Literal["none", "mlp"] = "none"
    head_bottleneck: int = Field(400, ge=1)
    head_scale: float = 0.1
    head_dropout: float = Field(0.5, ge=0, lt=1)
    distance: Literal["euclidean", "cosine", "relation", "transformed"] = "euclidean"
    cosine_scale: float = Field(10.0, gt=0)  # initial temperature of the cosine distance
    learn_scale: bool = True
    relation_hidden: int = Field(256, ge=1)
    # start from a few-shot run's checkpoint: its encoder, and its head and distance where they fit (as the
    # first course report started the parametric distance from a Euclidean-trained encoder)
    init: Path | None = None

    @field_validator("init")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:  # Ray workers run in folders of their own
        return path.expanduser().resolve() if path is not None else None


class HallucinationConfig(Strict):
    """Wang et al. 2018: a generator G(feature ⊕ noise) adds ``m`` fake features per real support feature."""

    m: int = Field(10, ge=0)  # fake features per real support feature, in training
    eval_m: int | None = Field(None, ge=0)  # in evaluation (default: m)
    noise_dim: int = Field(128, ge=1)
    hidden: int = Field(400, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)


class AfhnConfig(Strict):
    """AFHN (Li et al. CVPR 2020): a conditional WGAN-GP generator of support features, with a classification
    regulariser on the fakes and an anti-collapse regulariser. G and D have their own Adam optimisers."""

    fakes: int = Field(2, ge=2)  # fake features per support (from as many noises); 2 feed the anti-collapse term
    noise_dim: int = Field(128, ge=1)
    hidden: int = Field(400, ge=1)
    g_lr: float = Field(1e-4, gt=0)
    d_lr: float = Field(1e-4, gt=0)
    adversarial_weight: float = Field(0.1, ge=0)  # of the generator's adversarial loss
    classification_weight: float = Field(1.0, ge=0)  # of cross-entropy on the fake features
    classification_warmup: int = Field(0, ge=0)  # epochs over which that weight rises linearly from 0
    # wgan-gp: the paper's critic D(x, s), conditioned on the class, Wasserstein loss with gradient penalty;
    # bce: a discriminator D(x) that does not see the class, sigmoid outputs trained with binary cross-entropy
    gan: Literal["wgan-gp", "bce"] = "wgan-gp"
    # paper: 1 / mean((1 - cos f) / (1 - cos z)) (Li et al.'s L_ar, inverted); ratio: |mean((1 - cos f) /
    # (1 - cos z)) - 1| + |mean(||f1 - f2|| / ||z1 - z2||) - 1|
    anti_collapse: Literal["paper", "ratio"] = "paper"
    anti_collapse_weight: float = Field(0.01, ge=0)
    gradient_penalty: float = Field(10.0, ge=0)  # WGAN-GP's lambda
    pretrain_epochs: int = Field(0, ge=0)  # epochs of plain ProtoNet training before G and D join


class ViewConfig(Strict):
    """One augmented view of BYOL (the paper's defaults; ``blur_p`` and ``solarize_p`` differ by view)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_p: float = Field(1.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = Field(0.0, ge=0, le=1)


class ByolConfig(Strict):
    """BYOL (Grill et al. 2020): projector and predictor MLPs, the target's EMA rate from ``tau_base`` to 1."""

    tau_base: float = Field(0.996, ge=0, le=1)
    hidden: int = Field(4096, ge=1)
    projection: int = Field(256, ge=1)
    view1: ViewConfig = ViewConfig(blur_p=1.0, solarize_p=0.0)
    view2: ViewConfig = ViewConfig(blur_p=0.1, solarize_p=0.2)


class OptimConfig(Strict):
    name: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD only


class ScheduleConfig(Strict):
    """Learning-rate schedule, stepped once per epoch: ``step`` multiplies by ``gamma`` every ``step_epochs``."""

    name: Literal["constant", "step", "cosine"] = "step"
    step_epochs: int = Field(20, ge=1)
    gamma: float = Field(0.5, gt=0, le=1)


class LoopConfig(Strict):
    """What every training run sets: epochs, optimiser and schedule, validation and logging, device."""

    epochs: int = Field(10, ge=1)
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    flip: bool = True  # random horizontal flip of training images (BYOL's views have their own)
    val_every: int = Field(1, ge=1)  # epochs between validations
    val_episodes: int | None = Field(200, ge=1)  # validate on the first N selection episodes (None: all)
    select: Literal["best", "last"] = "best"  # best.pt: the best validated epoch, or the last one
    log_every: int = Field(50, ge=1)  # steps between progress lines
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = True
    amp: bool | None = None  # mixed precision (bfloat16 autocast); unset: on for CUDA, off for CPUs
    resident: bool | None = None  # decoded images kept in GPU memory; unset: on for CUDA when they fit


class TrainConfig(LoopConfig):
    """Few-shot training: ``episodes_per_epoch`` episodes an epoch."""

    episodes_per_epoch: int = Field(100, ge=1)


class BatchTrainConfig(LoopConfig):
    """Training on shuffled mini-batches of images (pre-training, fine-tuning): ``batch_size`` is global, split
    between data-parallel workers; an epoch is one pass over the training split (the last partial batch dropped).
    """

    batch_size: int = Field(64, ge=2)
    crop_scale: tuple[float, float] | None = (0.35, 1.0)  # random resized crop of supervised images; null: none
    schedule: ScheduleConfig = ScheduleConfig(name="cosine")
    val_episodes: int | None = Field(100, ge=1)  # pre-training: selection episodes scored each epoch (None: all)
    log_every: int = Field(10, ge=1)


# Images for a ResNet-50 on a CPU: small, resized on decoding (the cache keeps each size once). 64 px, not 32:
# at 32 px layer4 sees 1x1 maps and a ResNet-50 trained from scratch stayed at chance. Real runs set
# data.image_size=84 (mini-ImageNet) / 128 (Office-Home).
_SMALL_IMAGES = {"image_size": 64, "resize": True}
# The torchvision ResNets a backbone may be: the course's ResNet-50, or a smaller one sized for CPUs.
Arch = Literal["resnet18", "resnet34", "resnet50"]


class PretrainConfig(Strict):
    """Pre-training a ResNet backbone (``arch``) on the few-shot train split: ``byol`` (no labels) or ``supervised``.

    Each epoch the backbone's features are scored on fixed few-shot validation episodes (nearest prototype,
    cosine): the monitor that picks the best checkpoint, with or without labels in training.
    """

    method: Literal["byol", "supervised"] = "byol"
    arch: Arch = "resnet50"
    data: DataConfig = DataConfig(**_SMALL_IMAGES)
    byol: ByolConfig = ByolConfig()
    train: BatchTrainConfig = BatchTrainConfig(optim=OptimConfig(lr=3e-4, weight_decay=1e-6))
    eval_episode: EpisodeSpec = EpisodeSpec()
    seed: int = 0
    output_dir: Path | None = None


LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4", "classifier")  # what ``lr_scale`` may name


class FinetuneConfig(Strict):
    """Fine-tuning a ResNet (``arch``) with a linear classifier on Office-Home: ``backbone`` is the pre-trained weights
    (a torchvision state dict or a pre-training run's ``backbone.pt``; none: random init); ``freeze`` trains the
    classifier only, backbone weights and BatchNorm statistics fixed. ``lr_scale`` multiplies the learning rate
    of single layers (``{stem: 0.1, layer4: 0.5}``)."""

    backbone: Path | None = None
    arch: Arch = "resnet50"  # the network; a pre-trained ``backbone`` must be one
    freeze: bool = False
    lr_scale: dict[str, float] = {}
    data: DataConfig = DataConfig(**_SMALL_IMAGES)
    # Office-Home has no split apart from the one scores are reported on: the last epoch is kept, validation is
    # a curve to look at, never a choice.
    train: BatchTrainConfig = BatchTrainConfig(
        optim=OptimConfig(lr=3e-4, weight_decay=1e-4), val_episodes=None, select="last"
    )
    seed: int = 0
    output_dir: Path | None = None

    @field_validator("lr_scale")
    @classmethod
    def _known_layers(cls, value: dict[str, float]) -> dict[str, float]:
        for name, scale in value.items():
            if name not in LAYERS:
                raise ValueError(f"unknown layer {name!r} (layers: {', '.join(LAYERS)})")
            if scale < 0:
                raise ValueError(f"{name}: a learning-rate scale must be >= 0, got {scale}")
        return value


class ExperimentConfig(Strict):
    """A whole few-shot run: data, model, training, and the episode shapes of training and evaluation."""

    method: Literal["protonet", "hallucination", "afhn"] = "protonet"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    hallucination: HallucinationConfig = HallucinationConfig()
    afhn: AfhnConfig = AfhnConfig()
    train: TrainConfig = TrainConfig()
    train_episode: EpisodeSpec = EpisodeSpec()
    eval_episode: EpisodeSpec = EpisodeSpec()
    seed: int = 0
    output_dir: Path | None = None  # default: ./results/<run name>


# Every config a training run is built from: each has ``train`` (epochs, optimiser, schedule...) and ``seed``.
TrainedConfig = ExperimentConfig | PretrainConfig | FinetuneConfig
TRAINED_CONFIGS: dict[str, type[TrainedConfig]] = {
    kind.__name__: kind for kind in (ExperimentConfig, PretrainConfig, FinetuneConfig)
}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values, sub-mappings merged key by key."""
    out = dict(base)
    for key, value in update.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


class StudiesConfig(Strict):
    """The studies a reproduce profile runs, each by the values of its table's rows; a study left out (or
    ``null``) is not run. ``tsne`` draws real and hallucinated features of the hallucinating methods' runs;
    ``settings`` are Office-Home settings A–E (letters, e.g. ``ABCDE``)."""

    distance: list[Literal["euclidean", "cosine", "relation", "transformed"]] | None = None
    shots: list[int] | None = None
    train_way: list[int] | None = None
    m: list[int] | None = None
    methods: list[Literal["protonet", "hallucination", "afhn", "afhn-report"]] | None = None
    tsne: bool = False
    settings: str | None = None

    @field_validator("shots", "train_way", "m")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and (not values or min(values) < 1 or len(set(values)) < len(values)):
            raise ValueError(f"give distinct positive values, got {values}")
        return values

    @field_validator("settings")
    @classmethod
    def _letters(cls, value: str | None) -> str | None:
        if value is not None and (not value or set(value) - set("ABCDE") or len(set(value)) < len(value)):
            raise ValueError(f"settings are distinct letters of ABCDE (e.g. ABCDE or BD), got {value!r}")
        return value


class ReproduceProfile(Strict):
    """A ``jobs/reproduce.py`` profile (``profiles/<name>.yaml``): the studies, the seeds of every run, and the
    ``key=value`` overrides of each kind of run: few-shot runs, backbone pre-trainings (both, then ``supervised``'s
    or ``byol``'s own), Office-Home fine-tunings."""

    studies: StudiesConfig
    seeds: int = Field(1, ge=1)
    fewshot: list[str] = []
    pretrain: list[str] = []
    supervised: list[str] = []
    byol: list[str] = []
    finetune: list[str] = []
