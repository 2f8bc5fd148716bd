"""What a kind of run supplies to :func:`fewshot.training.run.run`: a :class:`Recipe` builds the model and the
task it trains on, and says how to score the best checkpoint and what to write beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from fewshot.config.schema import TrainedConfig
from fewshot.data.cache import ImageBank
from fewshot.data.predictions import Score
from fewshot.data.splits import BankLoader, Protocol
from fewshot.methods.base import TrainedModule
from fewshot.training.loop import FitResult, Placement, Task

C = TypeVar("C", bound=TrainedConfig)


@dataclass(frozen=True)
class Outcome:
    """The best checkpoint's final score and the files written for it (rank 0)."""

    score: Score
    predictions: Path  # the course's (or Office-Home's) predictions CSV
    files: tuple[Path, ...] = ()  # other outputs worth keeping with the run (per-item scores, a backbone)
    # Training-free floors on the same episodes, by name, logged as ``<name>_acc``: a few-shot run's nearest mean
    # colour (``colour_baseline``), a pre-training's backbone before training (``random_backbone``).
    baselines: dict[str, Score] = field(default_factory=dict)
    protocol: Protocol | None = None  # what chose the checkpoint and what the score is on
    inputs: tuple[tuple[str, ImageBank], ...] = ()  # the decoded splits used, by role: train, selection, report
    # Other scores of the chosen checkpoint under other protocols, logged the same way: a pre-training's linear
    # probe (``linear_probe``, beside its untrained floor ``random_backbone_linear`` among the baselines).
    probes: dict[str, Score] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """A run's model and task, and ``finish(run_dir, device)``: score the model — the best checkpoint's weights
    loaded — and write the outputs."""

    model: TrainedModule
    task: Task
    finish: Callable[[Path, torch.device], Outcome]


Recipe = Callable[[C, BankLoader, Placement], Built]  # a kind of run: config, its data loader, its placement


@dataclass(frozen=True)
class RunResult:
    fit: FitResult
    outcome: Outcome | None = None  # None on ranks other than 0

    @property
    def score(self) -> Score | None:
        return self.outcome.score if self.outcome is not None else None
