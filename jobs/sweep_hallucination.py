"""Hallucination: the number M of fake features per support (10, 50, 100), and the methods compared at
5-way 1-shot (ProtoNet, hallucination, AFHN).

    python jobs/sweep_hallucination.py                 # both tables: built-in data, local Ray, local MLflow
    python jobs/sweep_hallucination.py --part m        # only the M sweep (or --part methods)
    ray job submit --working-dir . -- python jobs/sweep_hallucination.py --train-way 30 --epochs 40

The M sweep is MLflow experiment ``hallucination-m`` (M in training and evaluation alike); the comparison is
experiment ``methods``. Each child run of a hallucinating method also holds ``tsne.png``: real (×) and
hallucinated (▲) features of 5 validation classes.
"""

from __future__ import annotations

import argparse

from fewshot.cli import run_job, sweep_job, sweep_parser
from fewshot.config.schema import ExperimentConfig
from fewshot.orchestration.sweep import Sweep, Variant

MS = (10, 50, 100)
METHODS = ("protonet", "hallucination", "afhn")


def with_m(base: ExperimentConfig, m: int) -> ExperimentConfig:
    hallucination = base.hallucination.model_copy(update={"m": m, "eval_m": None})
    return base.model_copy(update={"method": "hallucination", "hallucination": hallucination})


def m_sweep(base: ExperimentConfig) -> Sweep:
    variants = [Variant(f"M={m}", with_m(base, m), {"m": str(m)}) for m in MS]
    spec = base.eval_episode
    title = f"{spec.way}-way {spec.shot}-shot accuracy by hallucinated features per support (M)"
    return Sweep(study="hallucination-m", name="m-sweep", group_by="m", title=title, variants=variants)


def method_sweep(base: ExperimentConfig) -> Sweep:
    variants = [Variant(name, base.model_copy(update={"method": name}), {"method": name}) for name in METHODS]
    spec = base.eval_episode
    title = f"{spec.way}-way {spec.shot}-shot accuracy by method"
    return Sweep(study="methods", name="method-comparison", group_by="method", title=title, variants=variants)


def main(args: argparse.Namespace) -> None:
    if args.part in ("m", "all"):
        sweep_job(m_sweep)(args)
    if args.part in ("methods", "all"):
        sweep_job(method_sweep)(args)


def parser() -> argparse.ArgumentParser:
    p = sweep_parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("m", "methods", "all"), default="all", help="which table(s) to make")
    return p


if __name__ == "__main__":
    run_job(main, parser())
