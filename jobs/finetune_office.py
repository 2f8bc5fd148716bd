"""Office-Home fine-tuning of a ResNet under settings A–E, one MLflow child run each, and the A–E table.

    python jobs/finetune_office.py                     # built-in data: pre-trains both backbones, then A–E
    python jobs/finetune_office.py --settings BD --supervised ~/resnet50_supervised.pt
    python jobs/finetune_office.py --ssl results/pretrain/byol-<hash>/backbone.pt lr_scale.stem=0.1
    ray job submit --working-dir . -- python jobs/finetune_office.py --image-size 128 --epochs 30 \\
        --pretrain-image-size 84 --pretrain-epochs 200 --batch-size 256 data.root=/data/hw4_data

    setting  pre-training            fine-tuning
    A        none (random init)      full network
    B        supervised              full network
    C        BYOL (no labels)        full network
    D        supervised              classifier only (frozen backbone)
    E        BYOL (no labels)        classifier only (frozen backbone)

Without --supervised / --ssl the job pre-trains that backbone first (as jobs/pretrain_*.py do; a finished one
with the same config is reused). Overrides `key=value` set the fine-tuning config, `pretrain.key=value` both
pre-training configs (e.g. pretrain.byol.tau_base=0.99). Each setting's run holds its predictions CSV
(Office-Home format: id,filename,label); the parent run holds the table (CSV, markdown) and a bar plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.cli import (
    FINETUNE_QUICK,
    PRETRAIN_QUICK,
    QUICK_BY_METHOD,
    run_job,
    sizing,
    stores,
    transfer_flags,
    transfer_parser,
)
from fewshot.config.loading import load_config
from fewshot.config.schema import FinetuneConfig, PretrainConfig


def parser() -> argparse.ArgumentParser:
    parser = transfer_parser(__doc__.splitlines()[0])
    parser.add_argument("--settings", default="ABCDE", help="which settings to run, e.g. ABCDE (default) or BD")
    parser.add_argument("--supervised", type=Path, help="supervised backbone for B and D: a torchvision ResNet "
                        "state dict of the arch fine-tuned (default: pre-train one)")  # fmt: skip
    parser.add_argument("--ssl", type=Path, help="self-supervised backbone for C and E (default: BYOL pre-training)")
    parser.add_argument("--pretrain-config", metavar="FILE", help="YAML config of the pre-trainings")
    parser.add_argument("--pretrain-epochs", type=int, help="pre-training epochs")
    parser.add_argument("--pretrain-image-size", type=int, help="pre-training image side (default: as fine-tuning)")
    parser.add_argument("--resume", action="store_true", help="continue the latest study of these settings")
    return parser


def main(args: argparse.Namespace) -> None:
    from fewshot.orchestration.transfer import OfficeStudy, run_office  # Ray and MLflow: once the flags parse

    where = stores(args)
    ours = [o for o in args.overrides if not o.startswith("pretrain.")]
    theirs = [o.removeprefix("pretrain.") for o in args.overrides if o.startswith("pretrain.")]
    finetune = load_config(FinetuneConfig, args.config, [*FINETUNE_QUICK, *transfer_flags(args), *ours])
    if args.pretrain_image_size is None:
        args.pretrain_image_size = args.image_size
    # The pre-trainings build the fine-tuning's network unless pretrain.arch= says otherwise (then it is refused).
    given = [f"arch={finetune.arch}", *transfer_flags(args, "pretrain_"), *theirs]

    def backbone(path: Path | None, method: str) -> Path | PretrainConfig:
        if path is not None:
            return path.expanduser().resolve()
        overrides = [f"method={method}", *PRETRAIN_QUICK, *QUICK_BY_METHOD[method], *given]
        return load_config(PretrainConfig, args.pretrain_config, overrides)

    study = OfficeStudy(
        finetune, backbone(args.supervised, "supervised"), backbone(args.ssl, "byol"), args.settings.upper()
    )
    comparison = run_office(study, where.tracker(), where.results, sizing(args), args.resume)
    print(comparison.to_markdown())
    print(f"table, plot and runs: {comparison.csv.parent}  (MLflow store: {where.tracking_uri})")


if __name__ == "__main__":
    run_job(main, parser())
