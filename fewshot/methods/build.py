"""Build a few-shot method from its config, or from a checkpoint that stores its config."""

from __future__ import annotations

from pathlib import Path

import torch

from fewshot.checkpoint import CheckpointError, load_checkpoint
from fewshot.config.loading import validate_config
from fewshot.config.schema import ExperimentConfig
from fewshot.methods.afhn import AFHN
from fewshot.methods.base import EpisodicMethod
from fewshot.methods.hallucination import Generator, HallucinationNet
from fewshot.methods.protonet import ProtoNet
from fewshot.models.conv4 import Conv4
from fewshot.models.distances import build_distance
from fewshot.models.heads import MLPHead


def build_method(config: ExperimentConfig) -> EpisodicMethod:
    """The model ``config`` describes, freshly initialised (seed the global RNG first for reproducibility)."""
    model = config.model
    encoder = Conv4(model.hidden)
    dim = encoder.out_dim(config.data.image_size)
    head = MLPHead(dim, model.head_bottleneck, model.head_scale, model.head_dropout) if model.head == "mlp" else None
    distance = build_distance(model.distance, dim, model.cosine_scale, model.learn_scale, model.relation_hidden)
    if config.method == "hallucination":
        h = config.hallucination
        generator = Generator(dim, h.noise_dim, h.hidden, h.dropout)
        return HallucinationNet(encoder, generator, distance, head, h.m, h.eval_m)
    if config.method == "afhn":
        return AFHN(encoder, distance, head, dim, config.afhn)
    return ProtoNet(encoder, distance, head)


def load_method(checkpoint: Path, device: torch.device | str = "cpu") -> tuple[ExperimentConfig, EpisodicMethod]:
    """The config stored in a few-shot run's ``checkpoint`` and its method with the checkpoint's weights, on
    ``device``; a checkpoint of another kind of run is a :class:`~fewshot.errors.ConfigError` naming it."""
    state = load_checkpoint(checkpoint)
    config = validate_config(ExperimentConfig, state["config"], f"config stored in {checkpoint}")
    method = build_method(config)
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as err:  # weights of another shape or method than the stored config describes
        raise CheckpointError(
            f"{checkpoint}: its weights do not fit the {config.method} model its config describes "
            f"({' '.join(str(err).split())[:300]})"
        ) from None
    return config, method.to(device)


SHARED_PARTS = ("encoder", "head", "distance")  # what a few-shot model can take from another's checkpoint


def initialise(method: EpisodicMethod, checkpoint: Path) -> list[str]:
    """Start ``method`` from a few-shot run's ``checkpoint``: its encoder, and its head and distance if it has
    them in the same shapes (a relation head after a Euclidean run starts fresh); returns the parts taken."""
    state = load_checkpoint(checkpoint)["model"]
    own = method.state_dict()
    taken = {k: v for k, v in state.items() if k.split(".")[0] in SHARED_PARTS and k in own}
    for key, value in taken.items():
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{checkpoint}: {key} has shape {tuple(value.shape)}, this model needs {tuple(own[key].shape)} "
                "(trained at another image size or encoder width?)"
            )
    parts = sorted({key.split(".")[0] for key in taken})
    if "encoder" not in parts:
        raise CheckpointError(f"{checkpoint} holds no encoder weights this model can start from")
    method.load_state_dict(taken, strict=False)
    return parts
