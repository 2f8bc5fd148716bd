"""Reporters: where the training loop sends each epoch's metrics and checkpoint.

The loop knows nothing of MLflow or Ray: locally a :class:`LogReporter` logs; inside Ray Train workers the
orchestration package passes a reporter that calls ``ray.train.report``. One loop, two hosts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def report(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        """Called after every epoch (``epoch`` counts from 1) with its metrics and the checkpoint just saved."""


class LogReporter:
    """Logs one line per epoch."""

    def report(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        log.info("epoch %d: %s", epoch, shown)


class MultiReporter:
    """Sends each report to several reporters in turn."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def report(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        for reporter in self.reporters:
            reporter.report(epoch, metrics, checkpoint)
