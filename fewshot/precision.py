"""Mixed precision (AMP), ``train.amp``.

Convolutions and matrix products run in bfloat16 (float16 with loss scaling on GPUs without bfloat16) under
:func:`torch.autocast`; distances, cosines and losses stay in float32 (:func:`full_precision`), where a squared
distance ``|q|^2 - 2 q.p + |p|^2`` in 8 bits of mantissa would cancel to noise.

Left unset, AMP is on for CUDA and off for CPUs. On a CPU with AMX matrix units (Intel Xeon since Sapphire
Rapids) ``train.amp=true`` trained a Conv4 ProtoNet 1.7x and a ResNet-50 1.5x faster, but oneDNN's bfloat16
kernels are not bit-reproducible (two runs of one seed differ, and a resumed run no longer ends where an
uninterrupted one does), so it is a choice, not the default; CPUs without AMX emulate bfloat16 and are slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of a run on ``device_type`` (None: float32 throughout)."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None

    @property
    def scaled(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none."""
        return self.dtype == torch.float16

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler that is a no-op unless the run trains in float16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scaled)

    def __str__(self) -> str:
        return "float32" if self.dtype is None else f"{str(self.dtype).removeprefix('torch.')} autocast"


def choose_precision(device: torch.device, amp: bool | None) -> Precision:
    """``amp`` None: on for CUDA, off elsewhere. On CUDA bfloat16 where the GPU has it (Ampere and later), else
    float16; on a CPU bfloat16."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return Precision(device.type)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Precision("cuda", torch.float16)
    return Precision(device.type, torch.bfloat16)


F = TypeVar("F", bound=Callable[..., torch.Tensor])


def full_precision(fn: F) -> F:
    """Run ``fn`` in float32 even inside an autocast region: its tensor arguments are cast up, autocast is off."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> torch.Tensor:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        if not torch.is_autocast_enabled(device_type):
            return fn(*args, **kwargs)
        args = tuple(_up(a) for a in args)
        kwargs = {k: _up(v) for k, v in kwargs.items()}
        with torch.autocast(device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _up(value: Any) -> Any:
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
