"""Draw the t-SNE of real (×) and hallucinated (▲) features from a hallucination or AFHN checkpoint.

    python jobs/tsne.py --checkpoint results/<run>/best.pt                  # its own validation split
    python jobs/tsne.py --checkpoint best.pt --data-root ~/hw4_data --out tsne.png --classes 5 --fakes 30

Data and image size come from the config stored in the checkpoint unless --data-root says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.cli import run_job
from fewshot.config import ExperimentConfig, validate_config
from fewshot.data.cache import load_bank
from fewshot.data.splits import data_root
from fewshot.data.tables import open_split
from fewshot.errors import ConfigError
from fewshot.methods.build import build_method
from fewshot.runtime import select_device
from fewshot.training.checkpoint import load_checkpoint
from fewshot.viz.tsne import hallucination_tsne


def main(args: argparse.Namespace) -> None:
    state = load_checkpoint(args.checkpoint)
    config = validate_config(ExperimentConfig, state["config"], f"config stored in {args.checkpoint}")
    method = build_method(config)
    if not hasattr(method, "hallucinate"):
        raise ConfigError(f"{args.checkpoint} holds a {config.method} model, which hallucinates no features "
                          "(use a hallucination or afhn checkpoint)")  # fmt: skip
    method.load_state_dict(state["model"])
    device = select_device(args.device)
    data = config.data.model_copy(update={"root": args.data_root}) if args.data_root else config.data
    bank = load_bank(open_split(data_root(data), args.split or data.val_split), data.image_size, data.resize)
    out = args.out or args.checkpoint.with_name("tsne.png")
    method.to(device)
    hallucination_tsne(method, bank, out, device, args.classes, args.per_class, args.fakes)
    print(f"wrote {out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="best.pt or last.pt of a training run")
    p.add_argument("--data-root", help="dataset root (default: the one the checkpoint was trained on)")
    p.add_argument("--split", help="split to draw classes from (default: the validation split)")
    p.add_argument("--out", type=Path, help="PNG to write (default: tsne.png beside the checkpoint)")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--per-class", type=int, default=30, help="real images per class")
    p.add_argument("--fakes", type=int, default=30, help="hallucinated features per class")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


if __name__ == "__main__":
    run_job(main, parser())
