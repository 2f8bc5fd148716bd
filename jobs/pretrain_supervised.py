"""Supervised pre-training of a ResNet-50 on the few-shot train split (its labels), as a Ray Train run.

    python jobs/pretrain_supervised.py                             # built-in data, 64 px, quick schedule
    ray job submit --working-dir . -- python jobs/pretrain_supervised.py --workers 4 --image-size 84 \\
        --epochs 100 --batch-size 256 data.root=/data/hw4_data

Writes results/pretrain/supervised-<config hash>/backbone.pt, the backbone settings B and D of
`jobs/finetune_office.py` use when no --supervised checkpoint is given; the same config again reuses it.
"""

from __future__ import annotations

from fewshot.cli import pretraining_job, run_job, transfer_parser

if __name__ == "__main__":
    run_job(pretraining_job("supervised"), transfer_parser(__doc__.splitlines()[0]))
