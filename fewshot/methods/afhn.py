"""Adversarial Feature Hallucination Networks (Li et al., CVPR 2020), on Prototypical Networks.

A conditional generator ``G(s, z)`` hallucinates features of the class whose support feature is ``s``; a
critic ``D(x, s)`` tells real features of that class (the episode's queries) from fakes, trained as a
Wasserstein GAN with gradient penalty (``afhn.gan=wgan-gp``; the course report's variant, ``bce``, has a
discriminator ``D(x)`` that does not see the class, trained with binary cross-entropy). Two regularisers
shape G: prototypes made of the fakes alone must classify the episode's queries (classification
regulariser, its weight optionally warming up), and two fakes from different noises must differ as much as
their noises do (anti-collapse, :func:`anti_collapse`). Encoder, generator and critic each have their own
optimiser and losses (see :meth:`AFHN.objectives`); the first ``pretrain_epochs`` epochs train the encoder
alone, as plain ProtoNet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshot.config.schema import AfhnConfig, OptimConfig
from fewshot.data.transforms import EpisodeTensors
from fewshot.methods.base import EpisodicMethod, Objective, StepOutput
from fewshot.methods.hallucination import Generator, draw_noise
from fewshot.methods.protonet import prototypes
from fewshot.precision import full_precision


class Critic(nn.Module):
    """``D(x, s)``: ``(features (B, D), conditions (B, D)) -> scores (B,)``; Linear(2D -> hidden) ->
    LeakyReLU(0.2) -> Linear(hidden -> 1), no sigmoid (a Wasserstein critic, or the logit of a BCE
    discriminator). Not ``conditional``, it sees the features alone: ``D(x)``, Linear(D -> hidden) first."""

    def __init__(self, dim: int, hidden: int = 400, conditional: bool = True) -> None:
        super().__init__()
        self.conditional = conditional
        width = 2 * dim if conditional else dim
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([features, conditions], dim=1) if self.conditional else features
        return self.net(inputs).squeeze(1)


CriticFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_penalty(critic: CriticFn, real: torch.Tensor, fake: torch.Tensor, conditions: torch.Tensor) -> Tensor:
    """WGAN-GP: ``E[(||grad_x D(x, s)|| - 1)^2]`` at random points ``x`` between paired real and fake features."""
    alpha = torch.rand(len(real), 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(mixed, conditions).sum(), mixed, create_graph=True)
    return (grads.norm(2, dim=1) - 1).pow(2).mean()


@full_precision
def anti_collapse(
    fake1: torch.Tensor,
    fake2: torch.Tensor,
    noise1: torch.Tensor,
    noise2: torch.Tensor,
    form: str = "paper",
    eps: float = 1e-5,
) -> torch.Tensor:
    """How much two fakes of one feature fail to spread as their noises do.

    ``paper``: Li et al.'s ``L_ar = mean((1 - cos(f1, f2)) / (1 - cos(z1, z2)))``, inverted as G minimises it:
    large when different noises give nearly the same feature (mode collapse), about 1 when the fakes spread as
    much as their noises. ``ratio`` (the course report's form): ``|L_ar - 1|`` plus its Euclidean analogue
    ``|mean(||f1 - f2|| / ||z1 - z2||) - 1|``, bounded near collapse and zero at the noises' own spread.
    """
    spread = (1 - F.cosine_similarity(fake1, fake2, dim=1)) / (1 - F.cosine_similarity(noise1, noise2, dim=1) + eps)
    if form == "paper":
        return 1 / (spread.mean() + eps)
    distances = (fake1 - fake2).norm(dim=1) / ((noise1 - noise2).norm(dim=1) + eps)
    return (spread.mean() - 1).abs() + (distances.mean() - 1).abs()


def same_class_partners(labels: torch.Tensor, pool_labels: torch.Tensor) -> torch.Tensor:
    """For each of ``labels``, the index of a random element of ``pool_labels`` with the same label."""
    scores = torch.rand(len(labels), len(pool_labels), device=labels.device)
    scores = scores.masked_fill(labels[:, None] != pool_labels[None, :], -1.0)
    return scores.argmax(dim=1)


D_LOSSES = {"wgan-gp": ("d_adv", "gp"), "bce": ("d_adv",)}  # the critic's losses, by ``AfhnConfig.gan``


class AFHN(EpisodicMethod):
    """ProtoNet whose prototypes also average ``config.fakes`` features hallucinated from each support feature.

    ``encoder``: images -> ``(N, dim)`` features; ``distance``: ``(queries, prototypes) -> logits``; ``head``
    (optional) maps features before the distance. Three optimisers: the encoder, head and distance minimise
    ``ce`` and ``fake_ce``; G adds ``g_adv`` and ``anti_collapse``; the critic minimises ``d_adv + gp``.
    """

    stage_pretraining: torch.Tensor  # 1.0 while the encoder trains alone (plain ProtoNet), else 0.0

    def __init__(
        self, encoder: nn.Module, distance: nn.Module, head: nn.Module | None, dim: int, config: AfhnConfig
    ) -> None:
        super().__init__()
        self.encoder, self.distance = encoder, distance
        self.head = head if head is not None else nn.Identity()
        self.generator = Generator(dim, config.noise_dim, config.hidden)
        self.critic = Critic(dim, config.hidden, conditional=config.gan == "wgan-gp")
        self.config = config
        self.fake_weight = config.classification_weight  # this epoch's weight of ``fake_ce`` (see start_epoch)
        # The stage is part of the model's state: a checkpoint saved during encoder pre-training predicts
        # without fakes (its generator never trained), wherever it is loaded.
        # (a float, not a bool: data-parallel workers broadcast buffers, which gloo does for floats)
        self.register_buffer("stage_pretraining", torch.tensor(float(config.pretrain_epochs > 0)))

    @property
    def pretraining(self) -> bool:
        return bool(self.stage_pretraining)

    def start_epoch(self, epoch: int) -> None:
        c = self.config
        self.stage_pretraining.fill_(float(epoch <= c.pretrain_epochs))
        trained = epoch - c.pretrain_epochs  # epochs of G's training, this one included
        ramp = min(1.0, max(trained, 0) / c.classification_warmup) if c.classification_warmup else 1.0
        self.fake_weight = c.classification_weight * ramp

    def hallucinate(self, features: torch.Tensor, m: int) -> torch.Tensor:
        """``(S, D)`` real features -> ``(S, m, D)`` fakes."""
        return self.generator(features, draw_noise(len(features), m, self.generator.noise_dim, features, self.training))

    def objectives(self) -> list[Objective]:
        gan = [*self.generator.parameters(), *self.critic.parameters()]
        model = [p for p in self.parameters() if p.requires_grad and not any(p is q for q in gan)]
        g_losses, g_optim = ("ce", "fake_ce", "g_adv", "anti_collapse"), OptimConfig(name="adam", lr=self.config.g_lr)
        d_optim = OptimConfig(name="adam", lr=self.config.d_lr)
        return [
            Objective("model", model, ("ce", "fake_ce")),
            Objective("generator", list(self.generator.parameters()), g_losses, g_optim),
            Objective("critic", list(self.critic.parameters()), D_LOSSES[self.config.gan], d_optim),
        ]

    def classify(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, way: int) -> torch.Tensor:
        if self.pretraining:  # G is still untrained: its fakes would only blur the prototypes
            return self.distance(self.head(query), prototypes(self.head(support), labels, way))
        return self._logits(query, support, self.hallucinate(support, self.config.fakes), labels, way)

    def step(self, batch: EpisodeTensors) -> StepOutput:
        support, query = self.encode_episode(batch)
        if self.pretraining:
            logits = self.classify(support, batch.support_labels, query, batch.way)
            return StepOutput({"ce": F.cross_entropy(logits, batch.query_labels)}, logits)
        c = self.config
        noise = torch.randn(len(support), c.fakes, self.generator.noise_dim, device=support.device)
        fakes = self.generator(support, noise)  # (S, K, D)
        logits = self._logits(query, support, fakes, batch.support_labels, batch.way)
        fake_labels = batch.support_labels.repeat_interleave(c.fakes)
        flat_fakes = fakes.flatten(0, 1)
        # The classification regulariser (Li et al.): the queries classified by prototypes made of fakes alone.
        # (Fakes classified against the real supports' prototypes instead would reward fakes that copy them.)
        fake_prototypes = prototypes(self.head(flat_fakes), fake_labels, batch.way)
        fake_logits = self.distance(self.head(query), fake_prototypes)
        # The critic sees features conditioned on their class's support feature; real ones are the queries.
        conditions = prototypes(support, batch.support_labels, batch.way).detach()
        real = query.detach()[same_class_partners(fake_labels, batch.query_labels)]
        adversarial, extras = self._adversarial(real, flat_fakes, conditions[fake_labels])
        spread = anti_collapse(fakes[:, 0], fakes[:, 1], noise[:, 0], noise[:, 1], c.anti_collapse)
        losses = {
            "ce": F.cross_entropy(logits, batch.query_labels),
            "fake_ce": self.fake_weight * F.cross_entropy(fake_logits, batch.query_labels),
            "anti_collapse": c.anti_collapse_weight * spread,
            **adversarial,
        }
        return StepOutput(losses, logits, extras)

    def _adversarial(
        self, real: torch.Tensor, fakes: torch.Tensor, conditions: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """G's adversarial loss (``g_adv``) and the critic's (``d_adv``, and ``gp`` for WGAN-GP)."""
        c = self.config
        critic_fake, critic_real = self.critic(fakes.detach(), conditions), self.critic(real, conditions)
        generated = self.critic(fakes, conditions)
        if c.gan == "bce":
            ones, zeros = torch.ones_like(critic_real), torch.zeros_like(critic_fake)
            d_adv = F.binary_cross_entropy_with_logits(critic_real, ones)
            d_adv = d_adv + F.binary_cross_entropy_with_logits(critic_fake, zeros)
            g_adv = F.binary_cross_entropy_with_logits(generated, torch.ones_like(generated))
            return {"g_adv": c.adversarial_weight * g_adv, "d_adv": d_adv}, {}
        with torch.no_grad():
            wasserstein = (critic_real.mean() - critic_fake.mean()).item()
        losses = {
            "g_adv": -c.adversarial_weight * generated.mean(),
            "d_adv": critic_fake.mean() - critic_real.mean(),
            "gp": c.gradient_penalty * gradient_penalty(self.critic, real, fakes.detach(), conditions),
        }
        return losses, {"wasserstein": wasserstein}

    def _logits(
        self, query: torch.Tensor, support: torch.Tensor, fakes: torch.Tensor, labels: torch.Tensor, way: int
    ) -> torch.Tensor:
        every = torch.cat([support[:, None, :], fakes], dim=1)  # (S, 1 + K, D)
        labels = labels.repeat_interleave(every.shape[1])
        return self.distance(self.head(query), prototypes(self.head(every.flatten(0, 1)), labels, way))
