"""Write course-format predictions for a testcase file with a trained checkpoint.

    python jobs/predict.py IMAGE_CSV IMAGE_DIR TESTCASE_CSV OUTPUT_CSV --checkpoint results/<run>/best.pt

The four positional arguments are the course's: the image CSV (id,filename,label), the folder of its images,
the testcase CSV (episode_id, support ids, query ids) and the predictions CSV to write
(episode_id,query0,...). If TESTCASE_CSV has a ``<name>_gt.csv`` beside it, the accuracy is printed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fewshot.cli import job_parser, run_job
from fewshot.data.cache import load_bank
from fewshot.data.predictions import write_predictions
from fewshot.data.tables import read_image_csv
from fewshot.data.testcase import episode_shape, load_fixed_episodes
from fewshot.errors import ConfigError, DataError
from fewshot.evaluation import Evaluation, evaluate
from fewshot.methods.build import load_method
from fewshot.paths import check_writable
from fewshot.runtime import select_device


def predict_testcase(
    checkpoint: Path,
    image_csv: Path,
    image_dir: Path,
    testcase_path: Path,
    output_csv: Path,
    device: str = "auto",
    shape: tuple[int, int] | None = None,
) -> Evaluation:
    """The course's prediction task: a trained checkpoint, an image CSV and folder, a testcase CSV in, a
    predictions CSV (``episode_id,query0,...``) out. The episodes' ``(way, shot)`` come from ``shape``, else
    from the testcase file (:func:`~fewshot.data.testcase.episode_shape`, the checkpoint's way as a hint); the
    image size from the checkpoint's config; the score is computed too when ``<testcase>_gt.csv`` exists."""
    run_device = select_device(device)
    config, method = load_method(checkpoint, run_device)
    way, shot = shape or episode_shape(testcase_path, config.eval_episode.way)
    method.to(memory_format=torch.channels_last)
    bank = load_bank(read_image_csv(image_csv, image_dir), config.data.image_size, config.data.resize)
    testcase, episodes = load_fixed_episodes(testcase_path, bank, way, shot)
    result = evaluate(method, bank, episodes, run_device)
    write_predictions(output_csv, testcase.episode_ids, result.predictions)
    return result


def main(args: argparse.Namespace) -> None:
    if (args.way is None) != (args.shot is None):
        raise DataError("give --way and --shot together (or neither: the testcase's header tells them)")
    if args.way is not None and (args.way < 2 or args.shot < 1):
        raise DataError(f"--way {args.way} --shot {args.shot}: an episode needs at least 2 classes and 1 shot")
    shape = (args.way, args.shot) if args.way is not None else None
    if args.output_csv.is_dir():
        raise ConfigError(f"{args.output_csv} is a folder: give the predictions CSV's file name")
    check_writable(args.output_csv.parent, "the folder of the predictions file")  # before computing anything
    result = predict_testcase(
        args.checkpoint, args.image_csv, args.image_dir, args.testcase_csv, args.output_csv, args.device, shape
    )
    n_episodes, n_query = result.predictions.shape
    print(f"wrote {n_episodes} episodes × {n_query} queries to {args.output_csv}")
    if result.score is not None:
        print(f"accuracy: {result.score}")


def parser() -> argparse.ArgumentParser:
    p = job_parser(__doc__.splitlines()[0], "checkpoint", "device", overrides=False)
    p.add_argument("image_csv", type=Path)
    p.add_argument("image_dir", type=Path)
    p.add_argument("testcase_csv", type=Path)
    p.add_argument("output_csv", type=Path)
    p.add_argument("--way", type=int, help="classes per episode (default: from the testcase's header)")
    p.add_argument("--shot", type=int, help="support images per class (default: from the testcase's header)")
    return p


if __name__ == "__main__":
    run_job(main, parser())
