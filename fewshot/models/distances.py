"""Distance functions: ``(query (Q, D), prototypes (N, D)) -> logits (Q, N)``; higher logit = closer.

- ``euclidean``: ``-||q - p||^2``, the Prototypical Networks choice (a Bregman divergence, so the prototype
  is the class mean in the right geometry).
- ``cosine``: ``s * cos(q, p)`` with a temperature ``s`` (fixed or learnable). Without it the logits lie in
  [-1, 1] and the softmax is nearly flat.
- ``relation``: a learnable MLP scoring each pair's features, ``w2 . relu(W1 [|q - p|; q * p] + b1) + b2``.
- ``transformed``: with a learnable ``F``, ``-||F(q) - F(p)||^2 / (cos(F(q), F(p)) + 2)``: closer in
  Euclidean distance and in angle both raise the logit (the divisor lies in [1, 3]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.precision import full_precision


@full_precision  # the expansion cancels: in bfloat16 near distances would be noise
def squared_euclidean(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``(Q, D), (N, D) -> (Q, N)`` squared distances, via ``|q|^2 - 2 q.p + |p|^2`` (no ``(Q, N, D)`` tensor)."""
    cross = query @ prototypes.T
    squared = query.pow(2).sum(1, keepdim=True) - 2 * cross + prototypes.pow(2).sum(1)
    return squared.clamp_min(0)


@full_precision
def cosine_similarity(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``(Q, D), (N, D) -> (Q, N)`` cosine similarities."""
    return F.normalize(query, dim=1) @ F.normalize(prototypes, dim=1).T


class Euclidean(nn.Module):
    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return -squared_euclidean(query, prototypes)


class Cosine(nn.Module):
    """``scale * cos(q, p)``; the scale is learned (through its log, so it stays positive) unless fixed."""

    def __init__(self, scale: float = 10.0, learnable: bool = True) -> None:
        super().__init__()
        log_scale = torch.tensor(math.log(scale))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * cosine_similarity(query, prototypes)


class Relation(nn.Module):
    """A learnable pair score ``MLP([|q - p|; q * p])``.

    Pair features, not the concatenation ``[q; p]``: on ``[q; p]`` the first layer is a sum ``W_q q + W_p p``
    of separate terms, so the MLP must build every comparison of ``q`` with ``p`` out of them; in the quick
    distance sweep it stayed at chance (19.8% against Euclidean's 45.6%, ``benchmarks/bench_sweep.py``). With
    ``|q - p|`` one unit already gives an L1 distance, with ``q * p`` a dot product: the MLP only has to learn
    which dimensions matter.
    """

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        q, p = query[:, None, :], prototypes[None, :, :]
        pairs = torch.cat([(q - p).abs(), q * p], dim=2)  # (Q, N, 2D)
        return self.mlp(pairs).squeeze(-1)


class Transformed(nn.Module):
    """``-||F(q) - F(p)||^2 / (cos(F(q), F(p)) + 2)`` with ``F`` = Linear(D, D) initialised to the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.transform = nn.Linear(dim, dim)
        with torch.no_grad():
            self.transform.weight.copy_(torch.eye(dim))
            self.transform.bias.zero_()

    def forward(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        q, p = self.transform(query), self.transform(prototypes)
        return -squared_euclidean(q, p) / (cosine_similarity(q, p) + 2)


DISTANCES = ("euclidean", "cosine", "relation", "transformed")


def build_distance(
    name: str, dim: int, cosine_scale: float = 10.0, learn_scale: bool = True, hidden: int = 256
) -> nn.Module:
    """The distance module called ``name`` (one of :data:`DISTANCES`) for ``dim``-d features."""
    if name == "euclidean":
        return Euclidean()
    if name == "cosine":
        return Cosine(cosine_scale, learn_scale)
    if name == "relation":
        return Relation(dim, hidden)
    if name == "transformed":
        return Transformed(dim)
    raise ValueError(f"unknown distance {name!r}; choose one of {', '.join(DISTANCES)}")
