"""The few-shot recipe (ProtoNet, hallucination, AFHN): trained on sampled episodes, validated on the first
``train.val_episodes`` fixed episodes, scored on every one of them; the predictions CSV is in the course format.
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
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode, load=load)
    method = build_method(config)
    if config.model.init is not None:
        parts = initialise(method, config.model.init)
        log.info("started the %s from %s", " and ".join(parts), config.model.init)

    def finish(run_dir: Path, device: torch.device) -> Outcome:
        result = evaluate(method, data.val, data.val_episodes, device)
        assert result.score is not None, "validation episodes carry their answers"
        predictions, scores = run_dir / "predictions.csv", run_dir / SCORES_FILE
        write_predictions(predictions, data.testcase.episode_ids, result.predictions)
        write_scores(scores, data.testcase.episode_ids, result.score)
        baseline = mean_colour_baseline(data.val, data.val_episodes)
        log.info("%d fixed episodes; nearest-mean-colour baseline on them: %s", len(data.val_episodes), baseline)
        return Outcome(result.score, predictions, (scores,), baseline)

    return Built(method, EpisodeTask(config, data), finish)
