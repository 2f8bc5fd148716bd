"""Draw the t-SNE of real (×) and hallucinated (▲) features from a hallucination or AFHN checkpoint.

    python jobs/tsne.py --checkpoint results/<run>/best.pt                  # its own validation split
    python jobs/tsne.py --checkpoint best.pt --data-root ~/hw4_data --out tsne.png --classes 5 --fakes 30

Data and image size come from the config stored in the checkpoint unless --data-root says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.cli import job_parser, run_job
from fewshot.runtime import select_device
from fewshot.viz.tsne import checkpoint_tsne


def main(args: argparse.Namespace) -> None:
    out = args.out or args.checkpoint.with_name("tsne.png")
    options = {"classes": args.classes, "per_class": args.per_class, "fakes": args.fakes}
    checkpoint_tsne(args.checkpoint, out, select_device(args.device), args.data_root, args.split, **options)
    print(f"wrote {out}")


def parser() -> argparse.ArgumentParser:
    p = job_parser(__doc__.splitlines()[0], "checkpoint", "data-root", "device", overrides=False)
    p.add_argument("--split", help="split to draw classes from (default: the validation split)")
    p.add_argument("--out", type=Path, help="PNG to write (default: tsne.png beside the checkpoint)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--per-class", type=int, default=30, help="real images per class")
    p.add_argument("--fakes", type=int, default=30, help="hallucinated features per class")
    return p


if __name__ == "__main__":
    run_job(main, parser())
