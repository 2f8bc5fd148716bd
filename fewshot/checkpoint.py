"""Checkpoints: written atomically (temp file, then rename), loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and built-in types, so loading it never runs pickled code:
``{"epoch", "model", "optimizers", "schedulers", "best_val_acc", "best_epoch", "history", "config"}``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fewshot.atomic import atomic_path
from fewshot.errors import FewshotError


class CheckpointError(FewshotError):
    """A checkpoint file is missing, truncated or not a fewshot checkpoint."""


REQUIRED_KEYS = ("epoch", "model", "config")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` to ``path`` atomically: readers see the old file or the complete new one."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a truncated or foreign file raises :class:`CheckpointError` naming it."""
    state = read_weights(path, map_location)
    if any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a fewshot checkpoint (needs keys {', '.join(REQUIRED_KEYS)})")
    return state


def read_weights(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Any ``torch.save``d dict (a checkpoint, a torchvision state dict), loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dict of weights")
    return state
