"""Comparison, learning-curve and tuning-study plots, written as PNG files."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.visualization import matplotlib as optuna_views

from fewshot.atomic import atomic_path

log = logging.getLogger(__name__)


def comparison_bars(table: pd.DataFrame, label: str, title: str, path: Path) -> Path:
    """Bar chart of ``table["acc"]`` per ``table[label]`` with ``table["err"]`` as error bars, chance as a line."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(table), 3.6), layout="constrained")
    names = table[label].astype(str)
    bars = ax.bar(names, table["acc"], yerr=table["err"], capsize=5, color="#4C72B0", alpha=0.9)
    ax.bar_label(bars, labels=[f"{a:.1f}" for a in table["acc"]], padding=3)
    if "chance" in table:
        ax.axhline(float(table["chance"].iloc[0]), color="grey", linestyle="--", linewidth=1, label="chance")
        ax.legend(loc="lower right")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel(label)
    ax.set_ylim(0, min(100, float((table["acc"] + table["err"].fillna(0)).max()) * 1.2 + 5))
    ax.set_title(title)
    return save_figure(fig, path)


def learning_curves(history: Sequence[dict[str, float]], title: str, path: Path) -> Path:
    """Training loss and validation accuracy against epoch."""
    frame = pd.DataFrame(history)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    left.plot(frame["epoch"], frame["loss"], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    if "val_acc" in frame:
        val = frame.dropna(subset=["val_acc"])
        right.errorbar(val["epoch"], val["val_acc"], yerr=val.get("val_ci95"), marker="o", capsize=3)
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy (%)")
    fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def optuna_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's views of a study, those its trials allow: the optimisation history (needs a completed trial),
    each trial's validation curve (ASHA's stops show as curves that end early) and parameter importances
    (needs two completed trials that differ)."""
    completed = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    curves, history = ("epoch", "validation accuracy (%)"), ("trial", "final accuracy (%)")
    wanted = {
        "optuna-curves.png": (optuna_views.plot_intermediate_values, len(study.trials) > 0, curves),
        "optuna-history.png": (optuna_views.plot_optimization_history, len(completed) > 0, history),
        "optuna-importance.png": (optuna_views.plot_param_importances, len(completed) > 1, None),
    }
    paths = []
    for name, (plot, possible, labels) in wanted.items():
        if not possible:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. importances when every trial has the same params
                log.info("skipped %s: %s", name, err)
                continue
        if labels is not None:
            axes.set_xlabel(labels[0])
            axes.set_ylabel(labels[1])
        figure = axes.get_figure(root=True)
        assert figure is not None
        figure.set_size_inches(7, 4.2)
        figure.set_layout_engine("constrained")
        paths.append(save_figure(figure, out_dir / name))
    return paths
