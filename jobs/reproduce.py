"""Both course reports from one job: every study's runs scheduled together, then report.md with its figures.

    python jobs/reproduce.py                           # profile quick: built-in data, local Ray and MLflow
    python jobs/reproduce.py --dry-run                 # the plan: every run, its config hash, done or not
    python jobs/reproduce.py --only distance,shots     # some studies (distance shots train-way m methods tsne settings)
    ray job submit --working-dir . -- python jobs/reproduce.py --profile paper --data-root /data/hw4_data

A profile (profiles/quick.yaml, profiles/paper.yaml, or a YAML file of your own) names the studies, their rows,
the seeds and each kind of run's overrides. A run two studies share trains once; run the same command again
after an interruption and only what MLflow does not hold finished trains (interrupted runs continue from their
checkpoints). The report is written to <results>/reproduce/<profile>/report-<time>/report.md and logged on a run
of MLflow experiment `report`; `python jobs/report.py --report` rebuilds it from the store alone.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from fewshot.cli import SIZING, STORES, job_parser, run_job, sizing, stores


def main(args: argparse.Namespace) -> None:
    from fewshot.orchestration.reproduce import dry_run, load_profile, make_plan, reproduce  # Ray and MLflow

    where = stores(args)
    name, profile = load_profile(args.profile)
    only = [study.strip() for study in args.only.split(",") if study.strip()] if args.only else []
    root = str(args.data_root.expanduser().resolve()) if args.data_root else None
    plan = make_plan(name, profile, where.results, only, root, args.seeds)
    if args.dry_run:
        print(dry_run(plan, where.tracker(), where.results, sizing(args)))
        return
    command = shlex.join(["python", "jobs/reproduce.py", *sys.argv[1:]])
    report = reproduce(plan, where.tracker(), where.results, sizing(args), command)
    print(report.read_text())
    print(f"report: {report}  (MLflow store: {where.tracking_uri}, experiment 'report')")


def parser() -> argparse.ArgumentParser:
    p = job_parser(__doc__.splitlines()[0], "data-root", "seeds", *SIZING, *STORES, overrides=False)
    p.add_argument("--profile", default="quick", help="profile name (profiles/<name>.yaml) or YAML file")
    p.add_argument("--only", metavar="STUDIES", help="comma-separated studies of the profile to run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and what is done; start nothing")
    return p


if __name__ == "__main__":
    run_job(main, parser())
