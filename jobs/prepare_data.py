"""Prepare a few-shot dataset: validate it, decode it into the cache, write its fixed evaluation episodes.

With no arguments it generates the built-in dataset. Run it once before a sweep so that trials start on a
warm cache, or to check a dataset you bring:

    python jobs/prepare_data.py data.root=/path/to/hw4_data
"""

from __future__ import annotations

import argparse

import numpy as np

from fewshot.cli import job_parser, run_job
from fewshot.config.loading import load_config
from fewshot.config.schema import DataConfig, EpisodeSpec, Strict
from fewshot.data.splits import load_fewshot_data


class PrepareConfig(Strict):
    data: DataConfig = DataConfig()
    train: EpisodeSpec = EpisodeSpec()
    eval: EpisodeSpec = EpisodeSpec()


def main(args: argparse.Namespace) -> None:
    config = load_config(PrepareConfig, args.config, args.overrides)
    data = load_fewshot_data(config.data, config.train, config.eval)
    print(f"data root:        {data.root}")
    banks = {"train": data.train, data.select.split: data.select.bank, data.report.split: data.report.bank}
    for name, bank in banks.items():
        per_class = np.bincount(bank.labels.numpy())
        print(
            f"{name + ':':<20} {len(bank)} images, {len(bank.classes)} classes "
            f"({per_class.min()}-{per_class.max()} per class), {tuple(bank.images.shape[1:])} uint8"
        )
    for role, fixed in (("selection", data.select), ("report", data.report)):
        print(f"{role + ' episodes:':<20} {len(fixed.episodes)} × {fixed.testcase.spec} in {fixed.path}")
    print(data.protocol.describe())


if __name__ == "__main__":
    run_job(main, job_parser(__doc__.splitlines()[0]))
