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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: give the checkpoint file in it (best.pt or last.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a save that never finished?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_why(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dict of weights")
    return state


def _why(err: Exception) -> str:
    """torch's reason, without its advice to retry with ``weights_only=False``: loading an untrusted pickle runs
    whatever code it holds, and a checkpoint from this project never needs it."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # not weights: an arbitrary pickle, or bytes that are no pickle at all
        detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        return f"not a file of weights: {detail}; it was not unpickled, as that could run code"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
