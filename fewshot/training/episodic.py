"""The few-shot recipe (ProtoNet, hallucination, AFHN): trained on sampled episodes, validated on the first
``train.val_episodes`` fixed episodes, scored on every one of them; the predictions CSV is in the course format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fewshot.config.schema import ExperimentConfig
from fewshot.data.predictions import write_predictions
from fewshot.data.splits import BankLoader, load_fewshot_data
from fewshot.evaluation import evaluate, mean_colour_baseline
from fewshot.methods.build import build_method
from fewshot.training.loop import Placement
from fewshot.training.recipe import Built, Outcome
from fewshot.training.tasks import EpisodeTask

log = logging.getLogger(__name__)


def recipe(config: ExperimentConfig, load: BankLoader, placement: Placement) -> Built:
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode, load=load)
    method = build_method(config)

    def finish(run_dir: Path, device: torch.device) -> Outcome:
        result = evaluate(method, data.val, data.val_episodes, device)
        assert result.score is not None, "validation episodes carry their answers"
        predictions = run_dir / "predictions.csv"
        write_predictions(predictions, data.testcase.episode_ids, result.predictions)
        baseline = mean_colour_baseline(data.val, data.val_episodes)
        log.info("%d fixed episodes; nearest-mean-colour baseline on them: %s", len(data.val_episodes), baseline)
        return Outcome(result.score, predictions, baseline=baseline)

    return Built(method, EpisodeTask(config, data), finish)
