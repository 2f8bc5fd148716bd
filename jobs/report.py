"""Rebuild a sweep's comparison table and plot from the MLflow store alone.

python jobs/report.py --study distance                 # the latest distance sweep
python jobs/report.py --study shots --run <parent run id> --tracking-uri sqlite:////abs/mlflow.db
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.cli import STORES, job_parser, run_job, stores
from fewshot.errors import FewshotError
from fewshot.tracking.runs import RunRecord, Tracker
from fewshot.tracking.tables import GROUP_TAG, compare, gather_runs, publish


def main(args: argparse.Namespace) -> None:
    where = stores(args)
    tracker = where.tracker()
    run = tracker.get(args.run) if args.run else _latest_sweep(tracker, args.study)
    by = args.by or run.tags.get(GROUP_TAG)
    if not by:
        raise FewshotError(f"run {run.run_id} is not a sweep parent (no {GROUP_TAG!r} tag); pass --by TAG")
    table = compare(gather_runs(tracker, run.run_id), by)
    if table.empty:
        raise FewshotError(f"sweep {run.run_id} has no finished runs with a val_acc metric")
    out = (args.out or Path(run.tags.get("results_dir") or where.results / args.study / "report")).resolve()
    comparison = publish(tracker, run.run_id, table, by, run.name or args.study, out)
    print(comparison.to_markdown())
    print(f"written to {out} and logged on run {run.run_id}")


def _latest_sweep(tracker: Tracker, study: str) -> RunRecord:
    run = tracker.latest(study, GROUP_TAG)
    if run is None:
        raise FewshotError(f"no sweep runs in MLflow experiment {study!r} of {tracker.uri}")
    return run


def parser() -> argparse.ArgumentParser:
    p = job_parser(__doc__.splitlines()[0], *STORES, overrides=False)
    p.add_argument("--study", default="distance", help="MLflow experiment (distance, shots, ...)")
    p.add_argument("--run", help="parent run id (default: the latest sweep of the study)")
    p.add_argument("--by", help="tag to group by (default: the sweep's own)")
    p.add_argument("--out", type=Path, help="folder for the table and plot (default: the sweep's results folder)")
    return p


if __name__ == "__main__":
    run_job(main, parser())
