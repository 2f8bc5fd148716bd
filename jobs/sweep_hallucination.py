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


# The second course report's AFHN, as settings of the same module: a BCE discriminator blind to the class, the
# bounded anti-collapse form, the fake-feature loss warming up over two epochs, no encoder pre-training.
REPORT_AFHN = {"gan": "bce", "anti_collapse": "ratio", "anti_collapse_weight": 1.0, "classification_warmup": 2,
               "pretrain_epochs": 0}  # fmt: skip


def method_sweep(base: ExperimentConfig) -> Sweep:
    variants = [Variant(name, base.model_copy(update={"method": name}), {"method": name}) for name in METHODS]
    report = base.model_copy(update={"method": "afhn", "afhn": base.afhn.model_copy(update=REPORT_AFHN)})
    variants.append(Variant("afhn-report", report, {"method": "afhn-report"}))
    spec = base.eval_episode
    title = f"{spec.way}-way {spec.shot}-shot accuracy by method"
    return Sweep(study="methods", name="method-comparison", group_by="method", title=title, variants=variants)


def main(args: argparse.Namespace) -> None:
    parts = {"m": (m_sweep,), "methods": (method_sweep,), "all": (m_sweep, method_sweep)}
    sweep_job(*parts[args.part])(args)  # both tables' runs go out at once


def parser() -> argparse.ArgumentParser:
    p = sweep_parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("m", "methods", "all"), default="all", help="which table(s) to make")
    return p


if __name__ == "__main__":
    run_job(main, parser())
