"""Comparison tables gathered from MLflow alone: the child runs of a sweep -> accuracy per configuration.

With one seed per configuration the error is that run's 95% CI over evaluation episodes; with several seeds
it is the standard deviation of the seeds' accuracies (the spread that matters when comparing methods).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fewshot.atomic import write_text_atomic
from fewshot.data.predictions import SCORES_FILE, Score, paired_difference, read_scores
from fewshot.errors import DataError
from fewshot.tracking.runs import RunRecord, Tracker
from fewshot.viz.plots import comparison_bars

# A run's final score, on the episodes (or images) its protocol reports on, never those that chose its checkpoint
# (the per-epoch ``val_acc`` curve); the protocol is a tag (``protocol``, and ``protocol.detail`` in words).
METRIC, CI_METRIC = "report_acc", "report_ci95"
SELECT_METRIC = "select_acc"  # the chosen checkpoint's selection score (the best val_acc)
PROTOCOL_TAG = "protocol"
PROTOCOL_DETAIL = f"{PROTOCOL_TAG}.detail"
GROUP_TAG = "by"  # on a sweep's parent run: the tag whose values are its table's rows
# A pre-training's floor: its backbone before training, probed on the same episodes as the trained one; and
# the linear probe of both (held-out images of the same split), by the metric of each and the column it fills.
PROBE_METRICS = {"untrained": "random_backbone", "linear": "linear_probe", "untrained_linear": "random_backbone_linear"}
PROBE_COLUMNS = {
    "untrained": "untrained backbone, same episodes (%)",
    "linear": "linear probe, held-out images (%)",
    "untrained_linear": "untrained backbone, linear probe (%)",
}


@dataclass(frozen=True)
class Comparison:
    """A comparison table and where it was written."""

    table: pd.DataFrame
    csv: Path
    markdown: Path
    plot: Path

    def to_markdown(self) -> str:
        return self.markdown.read_text()


def gather_runs(tracker: Tracker, parent: str) -> pd.DataFrame:
    """:func:`runs_frame` of the child runs of ``parent``."""
    return runs_frame(tracker.children(parent))


def runs_frame(runs: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run: its id, name, status, tags (``distance``, ``seed``...) and metrics."""
    rows = []
    for run in runs:
        tags = {k: v for k, v in run.tags.items() if not k.startswith("mlflow.")}
        rows.append({"run_id": run.run_id, "run_name": run.name, "status": run.status, **tags, **run.metrics})
    return pd.DataFrame(rows)


def compare(
    runs: pd.DataFrame, by: str, describe: Sequence[str] = (), scores: ScoreReader | None = None
) -> pd.DataFrame:
    """Accuracy per value of tag ``by`` over the finished runs, in order of first appearance; tags named in
    ``describe`` (the same within a group, e.g. a setting's pre-training) are carried into the table. Given
    ``scores`` (each run's per-episode accuracies), each row scored on the first row's episodes also gets its
    paired difference to the first row."""
    if METRIC not in runs.columns or by not in runs.columns:  # no run finished with a score (all failed)
        runs = runs.iloc[0:0].reindex(columns=list(dict.fromkeys([*runs.columns, METRIC, CI_METRIC, by, *describe])))
    done = runs[(runs["status"] == "FINISHED") & runs[METRIC].notna()] if len(runs) else runs
    rows = []
    for value, group in done.groupby(by, sort=False):
        several = len(group) > 1
        error = group[METRIC].std(ddof=1) if several else group[CI_METRIC].iloc[0]
        described = {tag: group[tag].iloc[0] for tag in describe}
        protocols = group[PROTOCOL_DETAIL].dropna().unique() if PROTOCOL_DETAIL in group else ()
        rows.append(
            {
                by: value,
                **described,
                "acc": group[METRIC].mean(),
                "err": error,
                "error": "std over seeds" if several else "95% CI",
                "runs": len(group),
                "protocol": "; ".join(protocols) or "not recorded",
            }
        )
    table = pd.DataFrame(rows, columns=[by, *describe, "acc", "err", "error", "runs", "protocol"])
    table["accuracy"] = [f"{a:.2f} ± {e:.2f}" for a, e in zip(table["acc"], table["err"], strict=True)]
    for column, metric in PROBE_METRICS.items():  # pre-trainings: their untrained floor and linear probes
        acc, ci = f"{metric}_acc", f"{metric}_ci95"
        values = [done.loc[done[by] == value, [acc, ci]].mean() for value in table[by]] if acc in done else []
        if any(v.notna().all() for v in values):  # not runs of other tables under the same parent
            table[column] = [f"{v[acc]:.2f} ± {v[ci]:.2f}" if v.notna().all() else "n/a" for v in values]
    if scores is not None and len(table):
        groups = [done.loc[done[by] == value, "run_id"].tolist() for value in table[by]]
        differences = paired_differences([_mean_scores(ids, scores) for ids in groups])
        # Pair only rows scored on the reference row's episodes: the protocol line names the episode file by
        # its content hash (generated files of other shapes share episode ids, not episodes).
        reference = table["protocol"].iloc[0]
        differences = [d if p == reference else None for d, p in zip(differences, table["protocol"], strict=True)]
        table["delta"] = [d.mean if d is not None else math.nan for d in differences]
        table["delta_ci95"] = [d.ci95 if d is not None else math.nan for d in differences]
        table["paired"] = ["reference"] + [f"{d.mean:+.2f} ± {d.ci95:.2f}" if d else "n/a" for d in differences[1:]]
    return table


ScoreReader = Callable[[str], "pd.Series | None"]  # run id -> its per-episode (or per-image) accuracies


def sweep_table(tracker: Tracker, parent: str, by: str, describe: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`compare` of the child runs of ``parent``, with paired differences from their ``scores.csv``."""
    with tempfile.TemporaryDirectory(prefix="fewshot-scores-") as folder:
        return compare(gather_runs(tracker, parent), by, describe, run_scores(tracker, Path(folder)))


def run_scores(tracker: Tracker, folder: Path) -> ScoreReader:
    """Read a run's ``scores.csv`` artifact (downloaded into ``folder``); None for a run without one."""

    def read(run_id: str) -> pd.Series | None:
        path = tracker.artifact(run_id, SCORES_FILE, folder / run_id)
        return read_scores(path) if path is not None else None

    return read


def paired_differences(rows: Sequence[pd.Series | None]) -> list[Score | None]:
    """Each row's paired difference to the first (None for the first, and where a row has no per-item scores
    or was scored on other episodes than the first)."""
    reference, differences = rows[0], list[Score | None]([None])
    for row in rows[1:]:
        try:
            differences.append(paired_difference(row, reference) if row is not None and reference is not None else None)
        except DataError:
            differences.append(None)
    return differences


def _mean_scores(run_ids: Sequence[str], scores: ScoreReader) -> pd.Series | None:
    """The runs' per-item accuracies averaged over the runs (seeds scored on the same episodes)."""
    series = [scores(run_id) for run_id in run_ids]
    if not series or any(s is None for s in series):
        return None
    return pd.concat(series, axis=1).mean(axis=1)


def publish(
    tracker: Tracker, parent: str, table: pd.DataFrame, by: str, title: str, out_dir: Path, describe: Sequence[str] = ()
) -> Comparison:
    """Write the table as CSV, markdown and a bar plot into ``out_dir`` and log them on the parent run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"comparison-{by}"
    csv, markdown = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_text_atomic(csv, table.to_csv(index=False))
    columns = {"accuracy": "accuracy (%)", "paired": f"vs {table[by].iloc[0]}: paired Δ ± 95% CI"} | PROBE_COLUMNS
    extra = [column for column in ("paired", *PROBE_COLUMNS) if column in table]
    shown = table[[by, *describe, "accuracy", "error", *extra, "runs"]].rename(columns=columns)
    protocols = "\n".join(f"- {p}" for p in dict.fromkeys(table["protocol"])) if "protocol" in table else ""
    write_text_atomic(markdown, f"### {title}\n\n{shown.to_markdown(index=False)}\n\n{protocols}\n")
    plot = comparison_bars(table, by, title, out_dir / f"{stem}.png")
    for path in (csv, markdown, plot):
        tracker.log_artifact(parent, path)
    return Comparison(table, csv, markdown, plot)


def register_best(tracker: Tracker, parent: str, study: str) -> tuple[str, int] | None:
    """Register the model of ``parent``'s best finished child run (:func:`register_best_of`) and tag the parent
    with it; returns ``(name, version)``, or None when no child logged a model."""
    registered = register_best_of(tracker, tracker.children(parent), study)
    if registered is not None:
        name, version, run_id = registered
        tracker.set_tags(parent, {"registered_model": f"{name}/{version}", "best_run_id": run_id})
        return name, version
    return None


def register_best_of(tracker: Tracker, runs: Sequence[RunRecord], study: str) -> tuple[str, int, str] | None:
    """Register the model of the best of ``runs`` (finished) as a new version of ``fewshot-<study>`` in the
    Model Registry — best by its selection score, never by the score it reports; returns the name, version and
    run id, or None when no run logged a model."""
    done = [run for run in runs if run.status == "FINISHED" and SELECT_METRIC in run.metrics]
    for run in sorted(done, key=lambda run: run.metrics[SELECT_METRIC], reverse=True):
        version = tracker.register_model(run.run_id, f"fewshot-{study}")
        if version is not None:
            return f"fewshot-{study}", version, run.run_id
    return None
