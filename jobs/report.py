"""Rebuild a sweep's comparison table and plot from the MLflow store alone.

python jobs/report.py --study distance                 # the latest distance sweep
python jobs/report.py --study shots --run <parent run id> --tracking-uri sqlite:////abs/mlflow.db
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.cli import run_job
from fewshot.errors import FewshotError
from fewshot.tracking.runs import Tracker
from fewshot.tracking.tables import compare, gather_runs, publish


def main(args: argparse.Namespace) -> None:
    tracker = Tracker(args.tracking_uri)
    parent = args.run or _latest_sweep(tracker, args.study)
    run = tracker.client.get_run(parent)
    by = args.by or run.data.tags.get("by")
    if not by:
        raise FewshotError(f"run {parent} is not a sweep parent (no 'by' tag); pass --by TAG")
    table = compare(gather_runs(tracker, parent), by)
    if table.empty:
        raise FewshotError(f"sweep {parent} has no finished runs with a val_acc metric")
    out = Path(args.out or run.data.tags.get("results_dir") or f"results/{args.study}/report").resolve()
    comparison = publish(tracker, parent, table, by, run.info.run_name or args.study, out)
    print(comparison.to_markdown())
    print(f"written to {out} and logged on run {parent}")


def _latest_sweep(tracker: Tracker, study: str) -> str:
    experiment = tracker.client.get_experiment_by_name(study)
    if experiment is None:
        raise FewshotError(f"no MLflow experiment {study!r} in {tracker.uri}")
    runs = tracker.client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.by != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise FewshotError(f"experiment {study!r} in {tracker.uri} has no sweep runs")
    return runs[0].info.run_id


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="distance", help="MLflow experiment (distance, shots, ...)")
    p.add_argument("--run", help="parent run id (default: the latest sweep of the study)")
    p.add_argument("--by", help="tag to group by (default: the sweep's own)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./results/mlflow.db)")
    p.add_argument("--out", help="folder for the table and plot (default: the sweep's results folder)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run_job(main, parser())
