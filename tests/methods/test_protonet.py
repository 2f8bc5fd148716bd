import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data.transforms import EpisodeTensors
from fewshot.methods.protonet import ProtoNet, prototypes
from fewshot.models.distances import Euclidean
from tests.conftest import random_episode


def test_prototype_is_the_class_mean() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [0.0, 0.0], [0.0, 6.0]])
    labels = torch.tensor([0, 0, 1, 2, 2])
    expected = torch.tensor([[2.0, 3.0], [10.0, 0.0], [0.0, 3.0]])
    assert torch.equal(prototypes(features, labels, 3), expected)


def test_prototypes_do_not_depend_on_support_order() -> None:
    features, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(prototypes(features, labels, 3), prototypes(features[order], labels[order], 3))


def _episode(way: int = 3, shot: int = 2, query: int = 4) -> EpisodeTensors:
    return random_episode(way, shot, query, size=8)


def test_protonet_logits_are_negative_distances_to_class_means() -> None:
    encoder = nn.Flatten()
    model = ProtoNet(encoder, Euclidean())
    batch = _episode()
    logits = model.logits(batch)
    assert logits.shape == (12, 3)
    protos = batch.support.flatten(1).view(3, 2, -1).mean(1)
    expected = -torch.cdist(batch.query.flatten(1), protos).pow(2)
    assert torch.allclose(logits, expected, rtol=1e-4, atol=1e-3)
    output = model.step(batch)
    assert torch.allclose(output.losses["ce"], F.cross_entropy(expected, batch.query_labels), rtol=1e-4)


def test_protonet_is_stateless_between_episodes() -> None:
    model = ProtoNet(nn.Flatten(), Euclidean())
    first, second = _episode(), _episode(way=2, shot=1, query=3)
    before = model.logits(first)
    model.logits(second)  # a different episode in between must not change anything
    assert torch.equal(model.logits(first), before)
    assert not any(isinstance(v, torch.Tensor) for v in vars(model).values())
