"""Rebuild a sweep's comparison table and plot from the MLflow store alone, or compare two runs.

python jobs/report.py --report                         # the latest report of jobs/reproduce.py, rebuilt
python jobs/report.py --report --profile paper --out docs/report-paper
python jobs/report.py --study distance                 # the latest distance sweep
python jobs/report.py --study shots --run <parent run id> --tracking-uri sqlite:////abs/mlflow.db
python jobs/report.py --compare <run id> <run id>      # paired difference over the episodes both were scored on
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fewshot.cli import STORES, job_parser, run_job, stores
from fewshot.data.predictions import SCORES_FILE, mean_ci95, paired_difference
from fewshot.errors import FewshotError
from fewshot.tracking.report import REPORT_EXPERIMENT, build_report, read_plan
from fewshot.tracking.runs import RunRecord, Tracker
from fewshot.tracking.tables import GROUP_TAG, publish, run_scores, sweep_table


def main(args: argparse.Namespace) -> None:
    where = stores(args)
    tracker = where.tracker()
    if args.compare:
        compare_runs(tracker, *args.compare)
        return
    if args.report:
        rebuild_report(tracker, args.profile, args.out or where.results / "reproduce" / args.profile / "report-rebuilt")
        return
    run = tracker.get(args.run) if args.run else _latest_sweep(tracker, args.study)
    by = args.by or run.tags.get(GROUP_TAG)
    if not by:
        raise FewshotError(f"run {run.run_id} is not a sweep parent (no {GROUP_TAG!r} tag); pass --by TAG")
    table = sweep_table(tracker, run.run_id, by)
    if table.empty:
        raise FewshotError(f"sweep {run.run_id} has no finished runs with a report_acc metric")
    out = (args.out or Path(run.tags.get("results_dir") or where.results / args.study / "report")).resolve()
    comparison = publish(tracker, run.run_id, table, by, run.name or args.study, out)
    print(comparison.to_markdown())
    print(f"written to {out} and logged on run {run.run_id}")


def rebuild_report(tracker: Tracker, profile: str, out: Path) -> None:
    """The latest report of ``profile`` rebuilt from its plan and the runs MLflow holds, into ``out``."""
    run = tracker.latest(REPORT_EXPERIMENT, "profile", profile)
    if run is None:
        raise FewshotError(f"no report of profile {profile!r} in {tracker.uri}; run jobs/reproduce.py first")
    with tempfile.TemporaryDirectory(prefix="fewshot-plan-") as folder:
        plan = read_plan(tracker, run.run_id, Path(folder))
    report = build_report(tracker, plan, out.resolve())
    print(report.read_text())
    print(f"report rebuilt from MLflow run {run.run_id}: {report}")


def compare_runs(tracker: Tracker, first: str, second: str) -> None:
    """Print both runs' scores and their paired difference, episode by episode."""
    for run_id in (first, second):
        if not tracker.exists(run_id):
            raise FewshotError(f"run {run_id} is not in {tracker.uri}")
    with tempfile.TemporaryDirectory(prefix="fewshot-compare-") as folder:
        read = run_scores(tracker, Path(folder))
        scores = [read(first), read(second)]
    for run_id, score in zip((first, second), scores, strict=True):
        if score is None:
            raise FewshotError(f"run {run_id} has no {SCORES_FILE} artifact (a run that kept no per-episode scores)")
    a, b = (score for score in scores if score is not None)
    difference = paired_difference(a, b)
    for run_id, score in ((first, a), (second, b)):
        print(f"{tracker.get(run_id).name} ({run_id}): {mean_ci95(score.to_numpy())}")
    print(f"difference, paired over {len(a)} episodes: {difference.mean:+.2f} ± {difference.ci95:.2f} points (95% CI)")


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
    p.add_argument("--report", action="store_true", help="rebuild the latest report of jobs/reproduce.py")
    p.add_argument("--profile", default="quick", help="with --report: the profile whose report to rebuild")
    p.add_argument("--compare", nargs=2, metavar="RUN", help="two run ids: their paired difference, episode by episode")
    return p


if __name__ == "__main__":
    run_job(main, parser())
