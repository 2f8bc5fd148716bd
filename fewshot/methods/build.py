"""Build a method from its config."""

from __future__ import annotations

from fewshot.config import ExperimentConfig
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
