"""Pre-training and fine-tuning in-process on tiny data: what each writes, and what a frozen backbone keeps."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.models import resnet50

from fewshot.checkpoint import load_checkpoint, read_weights
from fewshot.config.loading import load_config
from fewshot.config.schema import FinetuneConfig, PretrainConfig
from fewshot.data.cache import load_bank
from fewshot.data.predictions import read_scores
from fewshot.data.splits import load_fewshot_data
from fewshot.errors import ConfigError
from fewshot.evaluation import evaluate
from fewshot.methods.classifier import Classifier
from fewshot.models.resnet import FEATURES, load_backbone, resnet_backbone
from fewshot.training import pretrain
from fewshot.training.loop import Placement
from fewshot.training.optim import build_optimizer
from fewshot.training.pretrain import initial_backbone
from fewshot.training.run import run
from fewshot.training.tasks import BatchOrder
from tests.conftest import StopAfter

SMALL = ["data.image_size=16", "train.batch_size=4", "train.epochs=1", "train.device=cpu", "train.log_every=1"]


def _overrides(root: Path, method: str) -> list[str]:
    return [f"data.root={root}", f"method={method}", *SMALL, "train.batch_size=40", "data.n_val_episodes=10",
            "train.val_episodes=5", "eval_episode.query=5", "byol.hidden=64", "byol.projection=16"]  # fmt: skip


def _pretrain_config(root: Path, method: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, _overrides(root, method))


def _finetune_config(root: Path, **extra: object) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, [f"data.root={root}", *SMALL, *(f"{k}={v}" for k, v in extra.items())])


@pytest.fixture(scope="module")
def torchvision_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full torchvision ResNet-50 state dict, 1000-way fc included, as a supervised checkpoint is given."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def _backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def test_frozen_finetuning_leaves_the_backbone_unchanged(
    tiny_builtin: Path, tmp_path: Path, torchvision_checkpoint: Path
) -> None:
    config = _finetune_config(tiny_builtin, backbone=torchvision_checkpoint, freeze=True, **{"train.epochs": 2})
    result = run(config, tmp_path)
    given = {k: v for k, v in read_weights(torchvision_checkpoint).items() if not k.startswith("fc.")}
    state = load_checkpoint(tmp_path / "last.pt")
    trained = _backbone_state(state["model"])
    assert trained.keys() == given.keys()  # BatchNorm running statistics included
    assert all(torch.equal(trained[k], given[k]) for k in given)
    assert [len(g["params"]) for g in state["optimizers"][0]["param_groups"]] == [2]  # the classifier alone
    assert state["optimizers"][0]["state"]  # and it stepped
    assert result.score is not None and len(result.fit.history) == 2
    # Office-Home has no split apart from the reported one: the last epoch is kept, whatever validation said.
    assert result.fit.best_epoch == 2 and os.path.samefile(tmp_path / "best.pt", tmp_path / "last.pt")
    assert result.outcome.protocol.name == "last-epoch"


def test_full_finetuning_changes_the_backbone_and_writes_office_predictions(
    tiny_builtin: Path, tmp_path: Path, torchvision_checkpoint: Path
) -> None:
    result = run(_finetune_config(tiny_builtin, backbone=torchvision_checkpoint), tmp_path)
    given = read_weights(torchvision_checkpoint)
    trained = _backbone_state(load_checkpoint(tmp_path / "last.pt")["model"])
    assert not torch.equal(trained["conv1.weight"], given["conv1.weight"])
    assert not torch.equal(trained["layer4.2.conv3.weight"], given["layer4.2.conv3.weight"])
    predictions = pd.read_csv(result.outcome.predictions, dtype=str)
    val = pd.read_csv(tiny_builtin / "office" / "val.csv", dtype=str)
    assert list(predictions.columns) == ["id", "filename", "label"]
    assert predictions["id"].tolist() == val["id"].tolist()
    assert predictions["filename"].tolist() == val["filename"].tolist()
    assert set(predictions["label"]) <= set(val["label"])
    assert 0 <= result.score.mean <= 100


def test_per_layer_learning_rates_give_layers_their_own_parameter_groups() -> None:
    scales = {"stem": 0.1, "layer4": 0.5, "classifier": 2.0}
    model = Classifier(resnet_backbone(), FEATURES["resnet50"], 5, lr_scale=scales)
    (objective,) = model.objectives()
    optimizer = build_optimizer(objective.params, FinetuneConfig().train.optim, objective.lr_scales)
    counts = {round(g["lr"] / 3e-4, 6): len(g["params"]) for g in optimizer.param_groups}
    layer4 = sum(name.startswith("layer4.") for name, _ in model.backbone.named_parameters())
    n_params = len(list(model.parameters()))
    # conv1 and bn1's weight and bias; layer4; the linear layer's weight and bias; everything else at 1
    assert counts == {0.1: 3, 0.5: layer4, 2.0: 2, 1.0: n_params - 3 - layer4 - 2}


def test_unknown_layer_in_lr_scale_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown layer 'layer5'"):
        load_config(FinetuneConfig, None, ["lr_scale.layer5=0.1"])


def test_a_partly_given_section_keeps_the_rest_of_its_defaults() -> None:
    config = load_config(FinetuneConfig, None, ["train.epochs=3", "train.optim.name=sgd", "data.root=/d"])
    assert config.train.optim.lr == FinetuneConfig().train.optim.lr == 3e-4  # not OptimConfig's 1e-3
    assert config.data.image_size == 64 and config.data.resize
    view2 = load_config(PretrainConfig, None, ["byol.view2.flip_p=0.1"]).byol.view2
    assert (view2.blur_p, view2.solarize_p, view2.flip_p) == (0.1, 0.2, 0.1)


def test_batch_order_splits_each_epoch_between_ranks_without_overlap() -> None:
    orders = [BatchOrder(50, 8, 2, seed=3) for _ in range(2)]
    assert orders[0].steps_per_epoch == 50 // 8
    for epoch in range(2):
        steps = range(epoch * 6, (epoch + 1) * 6)
        rows = torch.cat([orders[rank].rows(step * 2 + rank) for step in steps for rank in range(2)])
        assert len(rows) == len(set(rows.tolist())) == 48
    assert not torch.equal(orders[0].rows(0), orders[0].rows(12))  # a new shuffle each epoch
    assert torch.equal(BatchOrder(50, 8, 2, seed=3).rows(13), orders[1].rows(13))  # reproducible


@pytest.mark.parametrize("method", ["byol", "supervised"])
def test_pretraining_writes_a_backbone_that_finetuning_loads(tiny_builtin: Path, tmp_path: Path, method: str) -> None:
    result = run(_pretrain_config(tiny_builtin, method), tmp_path)
    scores, backbone = result.outcome.files
    assert (scores, backbone) == (tmp_path / "scores.csv", tmp_path / "backbone.pt")
    load_backbone(resnet_backbone(), backbone)  # a plain torchvision ResNet-50 state dict, no fc
    assert "val_acc" in result.fit.history[-1] and result.score is not None
    # the probe that chose the epoch ran on val episodes; the score is on the test split's
    assert result.outcome.protocol.name == "test-split"
    assert pd.read_csv(tmp_path / "predictions.csv").shape[0] == 10  # data.n_val_episodes test episodes
    assert read_scores(scores).mean() * 100 == pytest.approx(result.score.mean)  # per-episode, for pairing
    if method == "byol":
        state = load_checkpoint(tmp_path / "last.pt")["model"]
        online, target = state["backbone.conv1.weight"], state["target_backbone.conv1.weight"]
        assert not torch.equal(online, target)  # the EMA target lags the online net


def test_a_pretraining_probes_its_untrained_backbone_on_the_same_episodes(tiny_builtin: Path, tmp_path: Path) -> None:
    """The floor a probe is read against: the seed's random init (the very weights training starts from, a
    ResNet-18 here), probed on the report episodes; the global random state is left alone."""
    config = load_config(PretrainConfig, None, [*_overrides(tiny_builtin, "supervised"), "arch=resnet18", "seed=3"])
    built = pretrain.recipe(config, load_bank, Placement())
    start = initial_backbone(config).state_dict()
    assert all(torch.equal(v, start[k]) for k, v in built.model.backbone.state_dict().items())
    other = initial_backbone(config.model_copy(update={"seed": 4})).state_dict()
    assert not torch.equal(start["conv1.weight"], other["conv1.weight"])
    torch.manual_seed(0)
    expected_draw = torch.rand(3)
    torch.manual_seed(0)
    initial_backbone(config)
    assert torch.equal(torch.rand(3), expected_draw)  # building it left the global generator where it was

    result = run(config, tmp_path)
    floor = result.outcome.baselines["random_backbone"]
    data = load_fewshot_data(config.data, config.eval_episode, config.eval_episode, n_select=5)
    probe = pretrain.feature_probe(resnet_backbone("resnet18").eval(), torch.device("cpu"))
    probe.encoder.load_state_dict(start)
    expected = evaluate(probe, data.report.bank, data.report.episodes, torch.device("cpu")).score
    assert floor.mean == pytest.approx(expected.mean) and floor.ci95 == pytest.approx(expected.ci95)
    assert len(data.report.episodes) == 10


def test_an_interrupted_byol_run_resumes_to_the_same_weights(tiny_builtin: Path, tmp_path: Path) -> None:
    config = load_config(PretrainConfig, None, [*_overrides(tiny_builtin, "byol"), "train.epochs=2"])
    whole = run(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "resumed", reporter=StopAfter(1))
    resumed = run(config, tmp_path / "resumed")  # picks up last.pt of epoch 1
    assert [h["epoch"] for h in resumed.fit.history] == [1, 2]
    a, b = (load_checkpoint(r.fit.last_checkpoint)["model"] for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same batches, same views, same EMA target
