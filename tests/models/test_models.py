import math

import pytest
import torch

from fewshot.models.conv4 import Conv4
from fewshot.models.distances import (
    Cosine,
    Euclidean,
    Relation,
    Transformed,
    build_distance,
    squared_euclidean,
)
from fewshot.models.heads import MLPHead


def test_conv4_gives_1600_features_at_84px() -> None:
    encoder = Conv4()
    assert encoder(torch.randn(3, 3, 84, 84)).shape == (3, 1600)
    assert encoder.out_dim(84) == 1600
    assert encoder.out_dim(32) == 64 * 2 * 2 == Conv4()(torch.randn(2, 3, 32, 32)).shape[1]


def test_conv4_blocks_are_conv_bn_relu_pool() -> None:
    block = Conv4().blocks[0]
    kinds = [type(layer).__name__ for layer in block]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert block[0].kernel_size == (3, 3) and block[0].padding == (1, 1) and block[0].out_channels == 64


def test_mlp_head_is_transform_of_residual_enhance() -> None:
    head = MLPHead(16, bottleneck=4, scale=0.1, dropout=0.5).eval()
    x = torch.randn(5, 16)
    expected = head.transform(x + 0.1 * head.enhance(x))
    assert torch.equal(head(x), expected)
    assert head(x).shape == (5, 16)


QUERY = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
PROTOS = torch.tensor([[1.0, 0.0], [0.0, 2.0]])


def test_squared_euclidean_on_hand_made_tensors() -> None:
    expected = torch.tensor([[1.0, 4.0], [1.0, 2.0], [4.0, 13.0]])
    assert torch.allclose(squared_euclidean(QUERY, PROTOS), expected)
    assert torch.allclose(Euclidean()(QUERY, PROTOS), -expected)


def test_cosine_with_fixed_and_learnable_temperature() -> None:
    q, p = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, -3.0]])
    fixed = Cosine(scale=10.0, learnable=False)
    assert torch.allclose(fixed(q, p), torch.tensor([[10 / math.sqrt(2), -10 / math.sqrt(2)]]))
    assert list(fixed.parameters()) == []
    learnable = Cosine(scale=5.0)
    assert [n for n, _ in learnable.named_parameters()] == ["log_scale"]
    assert torch.allclose(learnable(q, p), 0.5 * fixed(q, p))


def test_relation_scores_each_pair_by_an_mlp_on_its_pair_features() -> None:
    torch.manual_seed(0)
    relation = Relation(dim=3, hidden=5)
    q, p = torch.randn(4, 3), torch.randn(2, 3)
    for i in range(4):
        for j in range(2):
            pair = torch.cat([(q[i] - p[j]).abs(), q[i] * p[j]])
            assert torch.allclose(relation(q, p)[i, j], relation.mlp(pair).squeeze(), atol=1e-6)


def test_one_relation_unit_is_already_a_distance() -> None:
    """What the pair features buy: one hidden unit gives -L1(q, p) (and another q . p), where an MLP on [q; p]
    has no such unit."""
    relation = Relation(dim=3, hidden=1)
    with torch.no_grad():
        relation.mlp[0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]))
        relation.mlp[0].bias.zero_()
        relation.mlp[2].weight.fill_(-1.0)
        relation.mlp[2].bias.zero_()
    q, p = torch.randn(4, 3), torch.randn(2, 3)
    assert torch.allclose(relation(q, p), -torch.cdist(q, p, p=1), atol=1e-6)


def test_transformed_distance_formula_at_identity_init() -> None:
    distance = Transformed(dim=2)
    cos = torch.tensor([[1.0, 0.0], [1 / math.sqrt(2), 2 / math.sqrt(8)], [1.0, 0.0]])
    expected = -torch.tensor([[1.0, 4.0], [1.0, 2.0], [4.0, 13.0]]) / (cos + 2)
    # the query at the origin has no direction: cosine is 0 by F.normalize's convention
    cos[0] = 0.0
    expected[0] = -torch.tensor([1.0, 4.0]) / 2
    assert torch.allclose(distance(QUERY, PROTOS), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["euclidean", "cosine", "relation", "transformed"])
def test_every_distance_scores_closer_prototypes_higher_at_init(name: str) -> None:
    torch.manual_seed(0)
    distance = build_distance(name, dim=8)
    prototypes = torch.randn(5, 8) * 3
    logits = distance(prototypes + 0.01 * torch.randn(5, 8), prototypes)
    assert logits.shape == (5, 5)
    if name != "relation":  # an untrained relation MLP has no notion of closeness yet
        assert torch.equal(logits.argmax(1), torch.arange(5))


def test_unknown_distance_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        build_distance("manhattan", 4)
