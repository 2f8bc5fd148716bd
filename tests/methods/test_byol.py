"""BYOL's parts: the symmetric loss, the EMA target and its schedule, per-image views, the ResNet-50 backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50

from fewshot.checkpoint import CheckpointError
from fewshot.methods.byol import BYOL, regression_loss, target_tau
from fewshot.models.resnet import FEATURES, load_backbone, resnet_backbone


def _byol() -> BYOL:
    torch.manual_seed(0)
    return BYOL(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32)), 32, hidden=64, projection=16)


def test_regression_loss_is_two_minus_two_cosine() -> None:
    p = torch.randn(5, 16)
    assert regression_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_loss(p, -p).item() == pytest.approx(4.0)
    q = torch.randn(5, 16, requires_grad=True)
    regression_loss(p.requires_grad_(), q).backward()
    assert q.grad is None  # the target side gets no gradient


def test_byol_loss_is_symmetric_in_the_two_views() -> None:
    model = _byol()
    view1, view2 = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    assert model.loss(view1, view2).item() == pytest.approx(model.loss(view2, view1).item(), rel=1e-5)
    loss = model.loss(view1, view2)
    loss.backward()
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(p.grad is None for p in model.target_backbone.parameters())


def test_ema_with_tau_one_keeps_the_target_and_tau_zero_copies_the_online_net() -> None:
    model = _byol()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # the online net moved away from the target
    before = [p.clone() for p in model.target_backbone.parameters()]
    model.update_target(1.0)
    assert all(torch.equal(p, b) for p, b in zip(model.target_backbone.parameters(), before, strict=True))
    model.update_target(0.5)
    online = list(model.backbone.parameters())
    halfway = [(b + o) / 2 for b, o in zip(before, online, strict=True)]
    assert all(torch.allclose(p, h) for p, h in zip(model.target_backbone.parameters(), halfway, strict=True))
    model.update_target(0.0)
    assert all(torch.equal(p, o) for p, o in zip(model.target_backbone.parameters(), online, strict=True))
    assert all(torch.equal(p, o) for p, o in zip(model.target_projector.parameters(),
                                                  model.projector.parameters(), strict=True))  # fmt: skip


def test_tau_rises_from_its_base_to_one_on_a_cosine() -> None:
    assert target_tau(0, 100, 0.996) == pytest.approx(0.996)
    assert target_tau(100, 100, 0.996) == pytest.approx(1.0)
    assert target_tau(50, 100, 0.996) == pytest.approx(0.998)
    taus = [target_tau(step, 100, 0.9) for step in range(101)]
    assert taus == sorted(taus)


def test_resnet50_backbone_gives_2048_features_and_loads_a_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = resnet_backbone().eval()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, FEATURES["resnet50"]) == (2, 2048)
    torch.manual_seed(1)
    supervised = resnet50(weights=None)
    torch.save(supervised.state_dict(), tmp_path / "supervised.pt")  # a full state dict, classifier included
    load_backbone(backbone, tmp_path / "supervised.pt")
    assert torch.equal(backbone.conv1.weight, supervised.conv1.weight)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt is not a ResNet-50 state dict"):
        load_backbone(backbone, tmp_path / "other.pt")


def test_a_resnet18_backbone_loads_its_own_weights_and_refuses_a_resnet50s(tmp_path: Path) -> None:
    """The CPU-sized option: 512-d features; ResNet-50 weights (same layer names, other shapes) are one error
    naming the file and the network, not a half-loaded model."""
    backbone = resnet_backbone("resnet18").eval()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, FEATURES["resnet18"]) == (2, 512)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    load_backbone(backbone, tmp_path / "r18.pt", "resnet18")
    torch.save(resnet50(weights=None).state_dict(), tmp_path / "r50.pt")
    with pytest.raises(CheckpointError, match=r"r50\.pt is not a ResNet-18 state dict \(set arch="):
        load_backbone(backbone, tmp_path / "r50.pt", "resnet18")
