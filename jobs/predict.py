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
from fewshot.data.testcase import load_fixed_episodes
from fewshot.evaluation import Evaluation, evaluate
from fewshot.methods.build import load_method
from fewshot.runtime import select_device


def predict_testcase(
    checkpoint: Path, image_csv: Path, image_dir: Path, testcase_path: Path, output_csv: Path, device: str = "auto"
) -> Evaluation:
    """The course's prediction task: a trained checkpoint, an image CSV and folder, a testcase CSV in, a
    predictions CSV (``episode_id,query0,...``) out. Episode shape and image size come from the checkpoint's
    config; the score is computed too when ``<testcase>_gt.csv`` exists beside the testcase file."""
    run_device = select_device(device)
    config, method = load_method(checkpoint, run_device)
    method.to(memory_format=torch.channels_last)
    bank = load_bank(read_image_csv(image_csv, image_dir), config.data.image_size, config.data.resize)
    testcase, episodes = load_fixed_episodes(testcase_path, bank, config.eval_episode.way, config.eval_episode.shot)
    result = evaluate(method, bank, episodes, run_device)
    write_predictions(output_csv, testcase.episode_ids, result.predictions)
    return result


def main(args: argparse.Namespace) -> None:
    result = predict_testcase(
        args.checkpoint, args.image_csv, args.image_dir, args.testcase_csv, args.output_csv, args.device
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
    return p


if __name__ == "__main__":
    run_job(main, parser())
