"""Comparison and learning-curve plots, written as PNG files (a tuning study's own: :mod:`fewshot.viz.study_plots`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from fewshot.atomic import atomic_path


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
