"""BYOL pre-training of a ResNet-50 on the few-shot train split, without labels, as a Ray Train run.

    python jobs/pretrain_byol.py                                   # built-in data, 64 px, quick schedule
    python jobs/pretrain_byol.py byol.tau_base=0.99 train.optim.lr=1e-3
    ray job submit --working-dir . -- python jobs/pretrain_byol.py --workers 4 --image-size 84 \\
        --epochs 200 --batch-size 256 data.root=/data/hw4_data

Writes results/pretrain/byol-<config hash>/backbone.pt (a torchvision ResNet-50 state dict, no fc) for
`jobs/finetune_office.py --ssl`; running the same config again reuses it, or resumes an interrupted run.
Each epoch scores the backbone on fixed 5-way 1-shot validation episodes (nearest prototype, cosine); the
chosen one is scored on the report episodes and by a linear probe on held-out report images, each beside the
same score of the untrained backbone.
"""

from __future__ import annotations

from fewshot.cli import pretraining_job, run_job, transfer_parser

if __name__ == "__main__":
    run_job(pretraining_job("byol"), transfer_parser(__doc__.splitlines()[0]))
