"""Optimisers and learning-rate schedules from config."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fewshot.config.schema import OptimConfig, ScheduleConfig


def build_optimizer(
    params: Sequence[nn.Parameter], config: OptimConfig, lr_scales: Sequence[float] = ()
) -> torch.optim.Optimizer:
    """An optimiser over ``params``; ``lr_scales`` (one per parameter) put parameters with another learning
    rate (``config.lr`` times the scale) into a parameter group of their own."""
    scales = list(lr_scales) or [1.0] * len(params)
    groups: dict[float, list[nn.Parameter]] = {}
    for param, scale in zip(params, scales, strict=True):
        groups.setdefault(scale, []).append(param)
    param_groups = [{"params": group, "lr": config.lr * scale, "lr_scale": scale} for scale, group in groups.items()]
    if config.name == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The optimiser's current learning rate before per-layer scales (what the schedule has made of it)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group["lr_scale"] if group.get("lr_scale") else group["lr"]


def build_schedule(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped once per epoch."""
    if config.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_epochs, gamma=config.gamma)
    if config.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
