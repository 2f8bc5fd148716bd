"""The few-shot recipe (ProtoNet, hallucination, AFHN): trained on sampled episodes, the checkpoint chosen on
``train.val_episodes`` selection episodes, scored on the report episodes (a test split's when the data has one:
:func:`~fewshot.data.splits.load_fewshot_data`); the predictions CSV is in the course format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fewshot.config.schema import ExperimentConfig
from fewshot.data.predictions import SCORES_FILE, write_predictions, write_scores
from fewshot.data.splits import BankLoader, load_fewshot_data
from fewshot.evaluation import evaluate, mean_colour_baseline
from fewshot.methods.build import build_method, initialise
from fewshot.training.loop import Placement
from fewshot.training.recipe import Built, Outcome
from fewshot.training.tasks import EpisodeTask

log = logging.getLogger(__name__)


def recipe(config: ExperimentConfig, load: BankLoader, placement: Placement) -> Built:
    data = load_fewshot_data(
        config.data, config.train_episode, config.eval_episode, load=load, n_select=config.train.val_episodes
    )
    method = build_method(config)
    if config.model.init is not None:
        parts = initialise(method, config.model.init)
        log.info("started the %s from %s", " and ".join(parts), config.model.init)

    def finish(run_dir: Path, device: torch.device) -> Outcome:
        report = data.report
        result = evaluate(method, report.bank, report.episodes, device)
        assert result.score is not None, "report episodes carry their answers"
        predictions, scores = run_dir / "predictions.csv", run_dir / SCORES_FILE
        write_predictions(predictions, report.testcase.episode_ids, result.predictions)
        write_scores(scores, report.testcase.episode_ids, result.score)
        baseline = mean_colour_baseline(report.bank, report.episodes)
        log.info(
            "%d %s episodes; nearest-mean-colour baseline on them: %s", len(report.episodes), report.split, baseline
        )
        baselines = {"colour_baseline": baseline} if baseline is not None else {}
        return Outcome(result.score, predictions, (scores,), baselines, data.protocol, data.inputs)

    return Built(method, EpisodeTask(config, data), finish)
