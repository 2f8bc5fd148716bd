"""ASHA + Optuna against an exhaustive grid over the same small space: best accuracy found, episodes spent.

    python benchmarks/bench_tune_vs_grid.py                       # tune_spaces/protonet-small.yaml, built-in data
    python benchmarks/bench_tune_vs_grid.py --space tune_spaces/protonet-small.yaml --samples 9

Both studies run as `jobs/tune.py` runs them (local Ray, one Train run per trial, MLflow under --results). The
grid trains every grid point for the full schedule; the ASHA study samples ``--samples`` points from the
space's ranges with Optuna and lets ASHA stop the weak ones. Compared: each study's best final accuracy (600
fixed validation episodes) and the training episodes it spent. The target: within 1 point of the grid's best
for at most half its episodes.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.study import Study, new_study
from fewshot.orchestration.tune import run_study
from fewshot.paths import default_tracking_uri
from fewshot.runtime import tune_allocator
from fewshot.search import load_space
from fewshot.tracking.runs import Tracker
from fewshot.tracking.studies import trial_table

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=REPO / "tune_spaces" / "protonet-small.yaml")
    parser.add_argument("--samples", type=int, help="ASHA trials (default: the space's samples)")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "bench-tune")
    parser.add_argument("--grid-study", type=Path, help="reuse this finished grid study instead of running one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_allocator()
    tracker = Tracker(default_tracking_uri(args.results.resolve()))
    base = ExperimentConfig()
    space = load_space(args.space, base)
    rows: list[dict[str, Any]] = []
    for grid in (True, False):
        start = time.monotonic()
        if grid and args.grid_study:
            study = Study.load(args.grid_study.resolve())
            table = trial_table(Tracker(study.tracking_uri), study.parent_run_id, list(space.params))
        else:
            study = new_study(args.space.resolve(), space, base, tracker, args.results.resolve(), args.samples, grid)
            outcome = run_study(study)
            assert outcome.summary is not None, "interrupted"
            table = outcome.summary.table
        best = table[table["verdict"] == "completed"].iloc[0]
        rows.append({
            "search": "grid" if grid else "optuna+asha",
            "trials": len(table),
            "completed": int((table["verdict"] == "completed").sum()),
            "episodes": int(table["episodes"].sum()),
            "best": f"{best['final_acc']:.2f} ± {best['final_ci95']:.2f}",
            "best_acc": float(best["final_acc"]),
            "best_params": ", ".join(f"{k}={best[k]:g}" for k in space.params),
            "minutes": _minutes(study) if grid and args.grid_study else (time.monotonic() - start) / 60,
            "folder": str(study.folder),
        })  # fmt: skip
    grid_row, asha_row = rows
    print("| search | trials | completed | training episodes | best accuracy (%) | best params | minutes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['search']} | {row['trials']} | {row['completed']} | {row['episodes']} | {row['best']} | "
              f"{row['best_params']} | {row['minutes']:.1f} |")  # fmt: skip
    gap = asha_row["best_acc"] - grid_row["best_acc"]
    share = asha_row["episodes"] / grid_row["episodes"]
    print(f"\nASHA + Optuna: {gap:+.2f} points against the grid's best (target ≥ -1), "
          f"{share:.0%} of the grid's training episodes (target ≤ 50%)")  # fmt: skip
    print(f"studies: {grid_row['folder']}, {asha_row['folder']}")


def _minutes(study: Study) -> float:
    """Wall time of a finished study, from its MLflow parent run."""
    run = Tracker(study.tracking_uri).get(study.parent_run_id)
    assert run.end_time is not None, f"study {study.name} has not ended"
    return (run.end_time - run.start_time) / 60_000


if __name__ == "__main__":
    main()
