"""Optuna's views of a tuning study, written as PNG files. Apart from :mod:`fewshot.viz.plots`, so that a
training worker, which draws its learning curves, does not import Optuna's plotting."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
from optuna.visualization import matplotlib as optuna_views

from fewshot.viz.plots import save_figure

log = logging.getLogger(__name__)


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
