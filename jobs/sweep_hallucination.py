"""Hallucination: the number M of fake features per support (10, 50, 100), and the methods compared at
5-way 1-shot (ProtoNet, hallucination, AFHN as in the paper, and the course report's AFHN variant).

    python jobs/sweep_hallucination.py                 # both tables: built-in data, local Ray, local MLflow
    python jobs/sweep_hallucination.py --part m        # only the M sweep (or --part methods)
    ray job submit --working-dir . -- python jobs/sweep_hallucination.py --train-way 30 --epochs 40

The M sweep is MLflow experiment ``hallucination-m`` (M in training and evaluation alike); the comparison is
experiment ``methods``. Each child run of a hallucinating method also holds ``tsne.png``: real (×) and
hallucinated (▲) features of 5 validation classes.
"""

from __future__ import annotations

import argparse

from fewshot.cli import SweepMaker, run_job, sweep_job, sweep_parser
from fewshot.orchestration.studies import m_sweep, method_sweep


def main(args: argparse.Namespace) -> None:
    parts: dict[str, tuple[SweepMaker, ...]] = {
        "m": (m_sweep,),
        "methods": (method_sweep,),
        "all": (m_sweep, method_sweep),
    }
    sweep_job(*parts[args.part])(args)  # both tables' runs go out at once


def parser() -> argparse.ArgumentParser:
    p = sweep_parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("m", "methods", "all"), default="all", help="which table(s) to make")
    return p


if __name__ == "__main__":
    run_job(main, parser())
