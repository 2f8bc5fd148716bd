"""Hallucination and AFHN: shapes, noise dependence, the WGAN-GP and anti-collapse terms, and that a short
AFHN run moves the encoder, the generator and the critic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fewshot.config.loading import load_config
from fewshot.config.schema import AfhnConfig, ExperimentConfig
from fewshot.data.splits import load_fewshot_data
from fewshot.data.transforms import EpisodeTensors
from fewshot.methods.afhn import AFHN, anti_collapse, gradient_penalty, same_class_partners
from fewshot.methods.build import build_method
from fewshot.methods.hallucination import Generator, HallucinationNet
from fewshot.methods.protonet import prototypes
from fewshot.models.distances import Euclidean
from fewshot.training.loop import Trainer
from fewshot.training.tasks import EpisodeTask
from tests.conftest import random_episode, tiny_overrides

DIM = 3 * 4 * 4


def _episode(way: int = 3, shot: int = 1, query: int = 4) -> EpisodeTensors:
    return random_episode(way, shot, query, size=4)


def _hallucination(m: int, eval_m: int | None = None) -> HallucinationNet:
    torch.manual_seed(0)
    return HallucinationNet(nn.Flatten(), Generator(DIM, noise_dim=8, hidden=16), Euclidean(), None, m, eval_m)


def test_generator_makes_m_fakes_per_feature_and_they_depend_on_the_noise() -> None:
    torch.manual_seed(0)
    generator = Generator(DIM, noise_dim=8, hidden=16)
    features = torch.randn(5, DIM)
    fakes = generator(features, torch.randn(5, 7, 8))
    assert fakes.shape == (5, 7, DIM)
    spread = fakes.std(dim=1).mean()  # across the 7 noises of one feature: no collapse at initialisation
    assert spread > 0.05 * fakes.abs().mean()
    same = generator(features, torch.zeros(5, 7, 8))
    assert torch.allclose(same[:, 0], same[:, 6])  # equal noise, equal fake: only the noise varies them


def test_prototypes_average_each_support_with_its_fakes() -> None:
    model = _hallucination(m=4).eval()
    batch = _episode(way=3, shot=2)
    support = model.encoder(batch.support)
    fakes = model.hallucinate(support, 4)  # evaluation noise is fixed, so this repeats the model's own draw
    every = torch.cat([support[:, None], fakes], dim=1).flatten(0, 1)
    expected = prototypes(every, batch.support_labels.repeat_interleave(5), 3)
    assert torch.allclose(model.augmented_prototypes(support, batch.support_labels, 3), expected)
    assert model.logits(batch).shape == (12, 3)
    assert torch.equal(model.logits(batch), model.logits(batch))  # evaluation does not depend on RNG state


def test_eval_m_zero_is_plain_protonet() -> None:
    model = _hallucination(m=5, eval_m=0).eval()
    batch = _episode()
    support = model.encoder(batch.support)
    assert torch.allclose(model.augmented_prototypes(support, batch.support_labels, 3), support)


def test_hallucination_trains_the_generator_through_the_episode_loss() -> None:
    model = _hallucination(m=3).train()
    output = model.step(_episode())
    output.losses["ce"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_error() -> None:
    weight = torch.tensor([3.0, 4.0])  # a critic with gradient w everywhere: penalty (|w| - 1)^2 = 16

    def critic(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x @ weight + s.sum(1)

    real, fake, cond = torch.randn(6, 2), torch.randn(6, 2), torch.randn(6, 2)
    assert gradient_penalty(critic, real, fake, cond).item() == pytest.approx(16.0)
    unit = weight / weight.norm()
    assert gradient_penalty(lambda x, s: x @ unit, real, fake, cond).item() == pytest.approx(0.0, abs=1e-10)


def test_anti_collapse_punishes_fakes_that_ignore_their_noise() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    f = torch.randn(8, 32)
    collapsed = anti_collapse(f, f + 1e-4 * torch.randn(8, 32), z1, z2)
    diverse = anti_collapse(f, torch.randn(8, 32), z1, z2)
    opposite = anti_collapse(f, -f, z1, z2)
    assert collapsed > 100 * diverse
    assert opposite < diverse  # more spread, smaller penalty
    assert diverse.item() == pytest.approx(1.0, rel=0.5)  # random fakes spread about as much as random noises
    # Li et al.'s L_ar, which G maximises: the term is its inverse
    f2 = torch.randn(8, 32)
    cos = nn.functional.cosine_similarity
    l_ar = ((1 - cos(f, f2, dim=1)) / (1 - cos(z1, z2, dim=1))).mean()
    assert anti_collapse(f, f2, z1, z2).item() == pytest.approx(1 / l_ar.item(), rel=1e-4)


def test_the_ratio_form_is_bounded_at_collapse_and_zero_at_the_noises_spread() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    f = torch.randn(8, 16)
    assert anti_collapse(f, f, z1, z2, "ratio").item() == pytest.approx(2.0, abs=1e-3)  # |0 - 1| + |0 - 1|
    assert anti_collapse(z1, z2, z1, z2, "ratio").item() == pytest.approx(0.0, abs=1e-3)  # spread as the noises
    assert anti_collapse(2 * z1, 2 * z2, z1, z2, "ratio").item() == pytest.approx(1.0, abs=1e-3)  # twice as far


def test_the_anti_collapse_term_does_not_swamp_the_other_losses_at_the_start() -> None:
    """A fresh residual generator's fakes of one support are nearly parallel (measured on 84 px built-in images:
    1 - cos 0.004 against the noises' 0.99), so the term starts high; at the default weight it starts below 10
    (the former default, the mean of the inverse ratio at weight 1, started near 400)."""
    config = load_config(ExperimentConfig, None, ["method=afhn"])
    torch.manual_seed(0)
    model = build_method(config).train()
    model.start_epoch(1)
    output = model.step(random_episode(way=5, shot=1, query=15, size=84))
    assert 0 < output.losses["anti_collapse"].item() < 10


def test_the_report_variant_is_a_bce_discriminator_blind_to_the_class() -> None:
    config = AfhnConfig(noise_dim=8, hidden=16, gan="bce", anti_collapse="ratio")
    model = AFHN(nn.Flatten(), Euclidean(), None, DIM, config).train()
    model.start_epoch(1)
    features = torch.randn(5, DIM)
    assert torch.equal(model.critic(features, torch.randn(5, DIM)), model.critic(features, torch.randn(5, DIM)))
    critic = {o.name: o for o in model.objectives()}["critic"]
    assert critic.losses == ("d_adv",)
    output = model.step(_episode())
    assert set(output.losses) == {"ce", "fake_ce", "g_adv", "anti_collapse", "d_adv"}
    assert output.losses["d_adv"].item() == pytest.approx(2 * 0.693, abs=0.3)  # BCE of an undecided discriminator
    assert output.losses["anti_collapse"].item() <= 2.5


def test_the_fake_feature_loss_weight_warms_up_after_encoder_pretraining() -> None:
    config = AfhnConfig(noise_dim=8, hidden=16, classification_weight=0.8, classification_warmup=4, pretrain_epochs=1)
    model = AFHN(nn.Flatten(), Euclidean(), None, DIM, config)
    weights = []
    for epoch in range(1, 7):
        model.start_epoch(epoch)
        weights.append(model.fake_weight)
    assert weights == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    torch.manual_seed(0)
    model.train().start_epoch(2)
    half = model.step(_episode()).losses["fake_ce"]
    torch.manual_seed(0)
    model.start_epoch(5)
    assert model.step(_episode()).losses["fake_ce"].item() == pytest.approx(4 * half.item(), rel=1e-5)


def test_critic_pairs_fakes_with_real_features_of_their_class() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2, 1])
    pool = torch.tensor([2, 1, 0, 2, 1, 0, 0])
    for _ in range(5):
        assert torch.equal(pool[same_class_partners(labels, pool)], labels)


def test_afhn_has_three_optimisers_with_their_own_losses() -> None:
    model = AFHN(nn.Flatten(), Euclidean(), None, DIM, AfhnConfig(noise_dim=8, hidden=16, g_lr=3e-4, d_lr=2e-4))
    model.start_epoch(1)
    objectives = {o.name: o for o in model.objectives()}
    assert set(objectives) == {"model", "generator", "critic"}
    assert objectives["generator"].optim.lr == 3e-4 and objectives["critic"].optim.lr == 2e-4
    groups = [set(map(id, o.params)) for o in objectives.values()]
    assert not (groups[0] & groups[1]) and not (groups[1] & groups[2]) and not (groups[0] & groups[2])
    output = model.train().step(_episode())
    assert set(output.losses) == {"ce", "fake_ce", "g_adv", "anti_collapse", "d_adv", "gp"}
    assert output.logits.shape == (12, 3)


def test_afhn_classification_regulariser_classifies_queries_by_prototypes_of_fakes() -> None:
    """As in Li et al.: prototypes made of the fakes alone classify the queries, so fakes that merely copy their
    support earn no more than the support itself does."""
    torch.manual_seed(0)
    model = AFHN(nn.Flatten(), Euclidean(), None, DIM, AfhnConfig(noise_dim=8, hidden=16, fakes=3)).train()
    model.start_epoch(1)
    batch = _episode(way=3, shot=2, query=4)
    torch.manual_seed(1)
    output = model.step(batch)
    torch.manual_seed(1)  # the same noise again
    support, query = batch.support.flatten(1), batch.query.flatten(1)
    fakes = model.generator(support, torch.randn(len(support), 3, 8)).flatten(0, 1)
    fake_prototypes = prototypes(fakes, batch.support_labels.repeat_interleave(3), 3)
    expected = nn.functional.cross_entropy(Euclidean()(query, fake_prototypes), batch.query_labels)
    assert torch.allclose(output.losses["fake_ce"], expected)
    copies = prototypes(support, batch.support_labels, 3)  # fakes that copy their support: ProtoNet's own loss
    assert not torch.allclose(expected, nn.functional.cross_entropy(Euclidean()(query, copies), batch.query_labels))


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _moved(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_a_short_afhn_run_updates_encoder_generator_and_critic(tiny_builtin: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(tiny_builtin, **{"method": "afhn", "train.epochs": 2, "train.episodes_per_epoch": 3,
                                                "afhn.pretrain_epochs": 1})  # fmt: skip
    config = load_config(ExperimentConfig, None, overrides)
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    torch.manual_seed(0)
    method = build_method(config)
    assert isinstance(method, AFHN)
    parts = {"encoder": method.encoder, "generator": method.generator, "critic": method.critic}
    trainer = Trainer(config, method, EpisodeTask(config, data), tmp_path)
    before = {name: _snapshot(part) for name, part in parts.items()}
    trainer.config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
    trainer.fit()  # epoch 1: encoder pre-training only
    assert _moved(method.encoder, before["encoder"])
    assert not _moved(method.generator, before["generator"]) and not _moved(method.critic, before["critic"])
    trainer.config = config
    history = trainer.fit().history  # epoch 2: the GAN joins
    assert all(_moved(part, before[name]) for name, part in parts.items())
    assert {"loss_gp", "loss_d_adv", "wasserstein"} <= set(history[-1])


def test_tsne_of_real_and_hallucinated_features_is_drawn(tiny_builtin: Path, tmp_path: Path) -> None:
    from fewshot.viz.tsne import hallucination_tsne

    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, method="hallucination"))
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    method = build_method(config)
    path = hallucination_tsne(method, data.report.bank, tmp_path / "tsne.png", classes=3, per_class=8, fakes=6)
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
