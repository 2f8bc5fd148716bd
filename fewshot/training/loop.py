"""The training loop: epochs of steps, validation, checkpoints, resume — one loop for every kind of run.

Read top to bottom: :meth:`Trainer.fit` runs epochs; an epoch asks its :class:`Task` for each step's inputs by
index (episodes from a seeded sampler, or mini-batches of a seeded permutation, so a resumed run sees exactly
the inputs it would have seen), steps every optimiser of the model, then validates, saves ``last.pt`` (and
``best.pt`` when validation improves) and reports. Everything that varies between hosts — the device, the
worker's rank, wrapping the model for data parallelism, where reports go — comes in through
:class:`Placement` and the :class:`~fewshot.training.reporting.Reporter`. Steps and validation run in the
run's :class:`~fewshot.precision.Precision` (AMP on CUDA, with loss scaling where it is float16).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from fewshot.atomic import link_atomic
from fewshot.checkpoint import save_checkpoint
from fewshot.config.loading import config_dict
from fewshot.config.schema import TrainedConfig
from fewshot.data.episodes import episode_seed
from fewshot.methods.base import StepOutput, TrainedModule
from fewshot.precision import choose_precision
from fewshot.training.optim import base_lr, build_optimizer, build_schedule
from fewshot.training.reporting import LogReporter, Reporter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where this copy of the loop runs: its device, rank among ``world_size`` workers, and how to wrap the
    model for data parallelism (identity in-process; DistributedDataParallel in Ray Train workers)."""

    device: torch.device = torch.device("cpu")
    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] = field(default=lambda module: module)


class Task(Protocol):
    """What a run trains on: ``steps_per_epoch`` steps of ``unit`` ("episodes", "batches"), the inputs of the
    step with global index ``index`` (rank-interleaved), and the validation metrics (``val_acc``, in %)."""

    unit: str
    steps_per_epoch: int

    def inputs(self, index: int, device: torch.device) -> Any: ...

    def validate(self, model: TrainedModule, device: torch.device) -> dict[str, float]: ...


@dataclass(frozen=True)
class FitResult:
    best_val_acc: float
    best_epoch: int
    history: list[dict[str, float]]
    best_checkpoint: Path
    last_checkpoint: Path


class Trainer:
    """Trains ``method`` on ``task`` as ``config.train`` says; ``resume`` is a checkpoint dict to continue."""

    def __init__(
        self,
        config: TrainedConfig,
        method: TrainedModule,
        task: Task,
        run_dir: Path,
        placement: Placement = Placement(),
        reporter: Reporter | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.config, self.task, self.placement = config, task, placement
        self.run_dir = Path(run_dir)
        self.reporter = reporter or LogReporter()
        self.method = method.to(placement.device).to(memory_format=self._memory_format())
        self.model = placement.wrap(self.method)  # what training steps call; ``method`` stays unwrapped
        self.objectives = method.objectives()
        train = config.train
        self.optimizers = [build_optimizer(o.params, o.optim or train.optim, o.lr_scales) for o in self.objectives]
        self.schedules = [build_schedule(opt, train.schedule, train.epochs) for opt in self.optimizers]
        self.precision = choose_precision(placement.device, train.amp)
        self.scaler = self.precision.grad_scaler()  # loss scaling for float16; a no-op otherwise
        self.epoch, self.best_val_acc, self.best_epoch = 0, -1.0, 0
        self.stepped: set[int] = set()
        self.history: list[dict[str, float]] = []
        if resume is not None:
            self._restore(resume)

    def fit(self) -> FitResult:
        """Run the remaining epochs; returns the best validation accuracy and where the checkpoints are."""
        log.info("training on %s in %s", self.placement.device, self.precision)
        while self.epoch < self.config.train.epochs:
            self.epoch += 1
            self.stepped = set()  # optimisers that stepped this epoch: only their schedules advance
            metrics = self._train_epoch()
            for i, schedule in enumerate(self.schedules):
                if i in self.stepped:
                    schedule.step()
            if self.epoch % self.config.train.val_every == 0 or self.epoch == self.config.train.epochs:
                metrics.update(self._validate())
            self.history.append({"epoch": self.epoch, **metrics})
            checkpoint = self._save()
            self.reporter.report(self.epoch, metrics, checkpoint)
        return FitResult(
            self.best_val_acc, self.best_epoch, self.history, self.run_dir / "best.pt", self.run_dir / "last.pt"
        )

    def _train_epoch(self) -> dict[str, float]:
        place, steps = self.placement, self.task.steps_per_epoch
        self.method.start_epoch(self.epoch)
        # Seed the global RNG (dropout, noise) per epoch and rank, so a resumed run continues identically.
        torch.manual_seed(episode_seed(self.config.seed, self.epoch) + place.rank)
        self.model.train()
        totals: dict[str, float] = {}
        start = time.perf_counter()
        for step in range(steps):
            done = (self.epoch - 1) * steps + step  # steps before this one, on each worker
            output = self.train_step(done * place.world_size + place.rank)
            self.method.after_step(done + 1, self.config.train.epochs * steps)
            _accumulate(totals, output)
            if (step + 1) % self.config.train.log_every == 0 or step + 1 == steps:
                self._log_progress(step + 1, totals, time.perf_counter() - start)
        metrics = {name: value / steps for name, value in totals.items()}
        metrics["lr"] = base_lr(self.optimizers[0])
        metrics[f"{self.task.unit}_per_s"] = steps / (time.perf_counter() - start)
        return metrics

    def train_step(self, index: int) -> StepOutput:
        inputs = self.task.inputs(index, self.placement.device)  # augmented in float32, outside autocast
        with self.precision.autocast():
            output: StepOutput = self.model(inputs)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        # Every objective's gradients are computed before any parameter moves (a GAN's two players see the
        # same state); ``inputs=`` keeps each objective's loss from leaking gradients into the others.
        # An objective whose losses the step left out (a stage that trains only part of the model) sits it out.
        active = [i for i, o in enumerate(self.objectives) if set(o.losses or output.losses) & set(output.losses)]
        for rank, i in enumerate(active):
            names = self.objectives[i].losses or output.losses
            first, *rest = (output.losses[name] for name in names if name in output.losses)
            loss = sum(rest, start=first)
            torch.autograd.backward(
                self.scaler.scale(loss), inputs=self.objectives[i].params, retain_graph=rank < len(active) - 1
            )
        for i in active:
            self.scaler.step(self.optimizers[i])
            self.stepped.add(i)
        self.scaler.update()
        return output

    def _validate(self) -> dict[str, float]:
        if self.placement.rank != 0:
            return {}
        with self.precision.autocast():
            return self.task.validate(self.method, self.placement.device)

    def _save(self) -> Path | None:
        if self.placement.rank != 0:
            return None
        last, score = self.run_dir / "last.pt", self.history[-1].get("val_acc")
        improved = self.config.train.select == "last" or (score is not None and score > self.best_val_acc)
        if improved:
            self.best_val_acc, self.best_epoch = score if score is not None else self.best_val_acc, self.epoch
        save_checkpoint(last, self._state())
        if improved:
            link_atomic(last, self.run_dir / "best.pt")  # the same bytes: a second name, not a second write
        return last

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.method.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedules": [s.state_dict() for s in self.schedules],
            "scaler": self.scaler.state_dict(),  # empty unless float16
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "config": config_dict(self.config),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for schedule, saved in zip(self.schedules, state["schedules"], strict=True):
            schedule.load_state_dict(saved)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best_val_acc, self.best_epoch = state["best_val_acc"], state["best_epoch"]
        log.info(
            "resuming after epoch %d (best val_acc %.2f at epoch %d)", self.epoch, self.best_val_acc, self.best_epoch
        )

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.train.channels_last else torch.contiguous_format

    def _log_progress(self, done: int, totals: dict[str, float], seconds: float) -> None:
        total, rate = self.task.steps_per_epoch, done / seconds
        acc = f" acc {100 * totals['acc'] / done:.1f}%" if "acc" in totals else ""
        epoch = f"epoch {self.epoch}/{self.config.train.epochs} [{done:>{len(str(total))}}/{total}]"
        speed = f"{rate:.2f} {self.task.unit}/s, epoch eta {(total - done) / rate:.0f}s"
        log.info("%s loss %.3f%s | %s", epoch, totals["loss"] / done, acc, speed)


def _accumulate(totals: dict[str, float], output: StepOutput) -> None:
    values = {f"loss_{k}" if len(output.losses) > 1 else "loss": v.item() for k, v in output.losses.items()}
    if len(output.losses) > 1:
        values["loss"] = sum(values.values())
    for name, value in {**values, **output.metrics}.items():
        totals[name] = totals.get(name, 0.0) + value
