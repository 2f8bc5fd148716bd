"""Comparison tables gathered from MLflow alone: the child runs of a sweep -> accuracy per configuration.

With one seed per configuration the error is that run's 95% CI over evaluation episodes; with several seeds
it is the standard deviation of the seeds' accuracies (the spread that matters when comparing methods).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fewshot.atomic import write_text_atomic
from fewshot.tracking.runs import Tracker
from fewshot.viz.plots import comparison_bars

METRIC, CI_METRIC = "val_acc", "val_ci95"
GROUP_TAG = "by"  # on a sweep's parent run: the tag whose values are its table's rows


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
    """One row per child run of ``parent``: its name, status, tags (``distance``, ``seed``...) and metrics."""
    rows = []
    for run in tracker.children(parent):
        tags = {k: v for k, v in run.tags.items() if not k.startswith("mlflow.")}
        rows.append({"run_id": run.run_id, "run_name": run.name, "status": run.status, **tags, **run.metrics})
    return pd.DataFrame(rows)


def compare(runs: pd.DataFrame, by: str, describe: Sequence[str] = ()) -> pd.DataFrame:
    """Accuracy per value of tag ``by`` over the finished runs, in order of first appearance; tags named in
    ``describe`` (the same within a group, e.g. a setting's pre-training) are carried into the table."""
    if METRIC not in runs.columns or by not in runs.columns:  # no run finished with a score (all failed)
        runs = runs.iloc[0:0].reindex(columns=list(dict.fromkeys([*runs.columns, METRIC, CI_METRIC, by, *describe])))
    done = runs[(runs["status"] == "FINISHED") & runs[METRIC].notna()] if len(runs) else runs
    rows = []
    for value, group in done.groupby(by, sort=False):
        several = len(group) > 1
        error = group[METRIC].std(ddof=1) if several else group[CI_METRIC].iloc[0]
        described = {tag: group[tag].iloc[0] for tag in describe}
        rows.append(
            {
                by: value,
                **described,
                "acc": group[METRIC].mean(),
                "err": error,
                "error": "std over seeds" if several else "95% CI",
                "runs": len(group),
            }
        )
    table = pd.DataFrame(rows, columns=[by, *describe, "acc", "err", "error", "runs"])
    table["accuracy"] = [f"{a:.2f} ± {e:.2f}" for a, e in zip(table["acc"], table["err"], strict=True)]
    return table


def publish(
    tracker: Tracker, parent: str, table: pd.DataFrame, by: str, title: str, out_dir: Path, describe: Sequence[str] = ()
) -> Comparison:
    """Write the table as CSV, markdown and a bar plot into ``out_dir`` and log them on the parent run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"comparison-{by}"
    csv, markdown = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    write_text_atomic(csv, table.to_csv(index=False))
    shown = table[[by, *describe, "accuracy", "error", "runs"]].rename(columns={"accuracy": "accuracy (%)"})
    write_text_atomic(markdown, f"### {title}\n\n{shown.to_markdown(index=False)}\n")
    plot = comparison_bars(table, by, title, out_dir / f"{stem}.png")
    for path in (csv, markdown, plot):
        tracker.log_artifact(parent, path)
    return Comparison(table, csv, markdown, plot)
