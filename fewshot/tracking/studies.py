"""A tuning study read back from MLflow: one row per trial, the best configuration, Optuna's plots.

Every trial is a child run of the study's parent run, tagged with its Tune ``trial_id`` and ASHA's verdict
(``completed`` or ``stopped at epoch e``), holding its config as params, ``val_acc`` per epoch (the selection
score) and, once completed, its best checkpoint's ``report_acc`` (on the episodes its protocol reports on).

Trials are ranked by their best selection score, completed ones first: the best trial is chosen as its
checkpoint was, never on the numbers reported for it, and the table shows its report score beside.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from fewshot.atomic import write_text_atomic
from fewshot.config.loading import to_yaml
from fewshot.config.schema import TrainedConfig
from fewshot.search import SearchSpace
from fewshot.tracking.runs import Tracker
from fewshot.tracking.tables import CI_METRIC, METRIC
from fewshot.viz.study_plots import optuna_plots

log = logging.getLogger(__name__)

COMPLETED = "completed"
VERDICT_TAG = "asha"
FINAL_METRIC = "best_epoch"  # logged once a run has trained every epoch and scored its best checkpoint


@dataclass(frozen=True)
class StudySummary:
    table: pd.DataFrame  # one row per trial, best first
    best_config: Path | None
    files: list[Path]

    def to_markdown(self) -> str:
        return self.table.drop(columns=["run_id", "curve"]).to_markdown(index=False, floatfmt=".4g")


def trial_table(tracker: Tracker, parent: str, keys: list[str]) -> pd.DataFrame:
    """The study's trials: searched ``keys``, verdict, epochs and episodes spent, best and final accuracy."""
    rows = []
    for run in tracker.children(parent):
        run_id, tags, params = run.run_id, run.tags, run.params
        curve = first_per_step(tracker, run_id, "val_acc")
        epochs = tracker.last_step(run_id)
        verdict = tags.get(VERDICT_TAG) or run.status.lower()
        completed = verdict == COMPLETED
        rows.append(
            {
                "trial": tags.get("trial_id", run.name),
                **{key: _value(params.get(key)) for key in keys},
                "verdict": verdict,
                "epochs": epochs,
                # training episodes spent (few-shot trials; mini-batch trials count epochs only)
                "episodes": epochs * int(params.get("train.episodes_per_epoch", 0)),
                "best_val_acc": max(curve.values(), default=math.nan),
                "final_acc": run.metrics.get(METRIC, math.nan) if completed else math.nan,
                "final_ci95": run.metrics.get(CI_METRIC, math.nan) if completed else math.nan,
                "run_id": run_id,
                "curve": curve,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_done"] = table["verdict"] == COMPLETED
    table = table.sort_values(["_done", "best_val_acc"], ascending=False, na_position="last")
    return table.drop(columns="_done").reset_index(drop=True)


def publish_study(
    tracker: Tracker, parent: str, space: SearchSpace, base: TrainedConfig, out_dir: Path
) -> StudySummary:
    """Write the trial table, the best config and Optuna's plots to ``out_dir`` and log them on ``parent``."""
    table = trial_table(tracker, parent, list(space.params))
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    summary = StudySummary(table, None, files)
    if table.empty:
        return summary
    csv = out_dir / "trials.csv"
    write_text_atomic(csv, table.drop(columns=["curve"]).to_csv(index=False))
    write_text_atomic(out_dir / "trials.md", summary.to_markdown() + "\n")
    files += [csv, out_dir / "trials.md"]
    completed = table[table["verdict"] == COMPLETED]
    best_config = None
    if not completed.empty:
        best = completed.iloc[0]
        config = space.trial_config({key: best[key] for key in space.params}, base)
        best_config = out_dir / "best-config.yaml"
        header = (
            f"# best trial {best['trial']} of the study, chosen on its selection score {best['best_val_acc']:.2f} %;"
            f" its report score: {best['final_acc']:.2f} ± {best['final_ci95']:.2f} %\n"
        )
        write_text_atomic(best_config, header + to_yaml(config))
        files.append(best_config)
        chosen = {"best_val_acc": float(best["best_val_acc"]), METRIC: float(best["final_acc"])}
        tracker.log_metrics(parent, {**chosen, CI_METRIC: float(best["final_ci95"])}, step=0)
        tracker.set_tags(parent, {"best_trial": best["trial"], "best_run_id": best["run_id"]})
    tracker.log_metrics(parent, {"trials": float(len(table)), "episodes": float(table["episodes"].sum())}, step=0)
    files += optuna_plots(optuna_study(table, space), out_dir)
    for path in files:
        tracker.log_artifact(parent, path)
    return StudySummary(table, best_config, files)


def optuna_study(table: pd.DataFrame, space: SearchSpace) -> optuna.Study:
    """The trials as an Optuna study: completed ones with their best selection score, ASHA-stopped ones as
    pruned, each with its per-epoch validation curve as intermediate values."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    distributions = space.distributions()
    for row_dict in table.to_dict("records"):
        params = {key: row_dict[key] for key in space.params}
        if any(_missing(value) for value in params.values()) or not row_dict["curve"]:
            continue
        completed = row_dict["verdict"] == COMPLETED and not math.isnan(row_dict["best_val_acc"])
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=row_dict["best_val_acc"] if completed else None,
                intermediate_values={int(k): v for k, v in row_dict["curve"].items()},
                state=optuna.trial.TrialState.COMPLETE if completed else optuna.trial.TrialState.PRUNED,
            )
        )
    return study


def settle_trial(tracker: Tracker, run_id: str) -> str:
    """End the MLflow run of a trial Tune has ended and return its verdict: ``completed`` if it scored its best
    checkpoint (``best_epoch`` is logged then), else ``stopped at epoch e`` (ASHA stopped it after epoch e). A
    run that already ended keeps the verdict it has."""
    run = tracker.get(run_id)
    if run.status != "RUNNING":
        return run.tags.get(VERDICT_TAG, run.status.lower())
    verdict = COMPLETED if FINAL_METRIC in run.metrics else f"stopped at epoch {tracker.last_step(run_id)}"
    tracker.set_tags(run_id, {VERDICT_TAG: verdict})
    tracker.finish(run_id)
    return verdict


def last_epoch(tracker: Tracker, run_id: str) -> dict[str, float]:
    """A trial run's last epoch as Tune saw it: ``{"epoch": e, "val_acc": its validation score}``."""
    curve = first_per_step(tracker, run_id, "val_acc")
    epoch = tracker.last_step(run_id)
    return {"epoch": epoch, "val_acc": curve.get(epoch, max(curve.values(), default=0.0))}


def first_per_step(tracker: Tracker, run_id: str, key: str) -> dict[int, float]:
    """The first value logged at each step (a completed run logs its final score again at the last step)."""
    out: dict[int, float] = {}
    for step, value in tracker.history(run_id, key):
        out.setdefault(step, value)
    return out


def _value(text: str | None) -> Any:
    return None if text is None else yaml.safe_load(text)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
