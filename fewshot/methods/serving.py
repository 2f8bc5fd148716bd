"""A few-shot model as a plain module, one tensor in and logits out: what MLflow's PyTorch flavour logs and its
pyfunc serves (``mlflow models predict``), with no fewshot types at its border."""

from __future__ import annotations

import torch
from torch import nn

from fewshot.data.transforms import BatchTransform, EpisodeTensors
from fewshot.methods.base import EpisodicMethod


class EpisodeClassifier(nn.Module):
    """``images`` ``(N, 3, H, W)`` uint8 — an episode's ``way * shot`` support images class by class, then its
    queries — to the queries' logits ``(N - way * shot, way)``, class ``c`` being the ``c``-th support class.

    The method is scored as its run scored it (eval mode, the same normalisation), so the logits' argmax is
    the run's prediction for that episode."""

    def __init__(self, method: EpisodicMethod, way: int, shot: int) -> None:
        super().__init__()
        self.method, self.way, self.shot = method, way, shot
        self.transform = BatchTransform()
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        n_support = self.way * self.shot
        if images.dim() != 4 or len(images) <= n_support:
            raise ValueError(f"expected (N, 3, H, W) images, {n_support} support then the queries; got {images.shape}")
        x = self.transform(images.to(torch.uint8))
        support_labels = torch.arange(self.way, device=x.device).repeat_interleave(self.shot)
        unknown = torch.full((len(x) - n_support,), -1, device=x.device)
        batch = EpisodeTensors(x[:n_support], support_labels, x[n_support:], unknown, self.way, self.shot)
        with torch.inference_mode():
            return self.method.logits(batch).float()


class ImageModel(nn.Module):
    """``images`` ``(N, 3, H, W)`` uint8 to ``head(backbone(images))``, normalised as in training and scoring:
    a fine-tuned classifier's logits ``(N, classes)``, classes in the order of its run's training split, or
    (no ``head``) a pre-trained backbone's features ``(N, 2048)``."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head if head is not None else nn.Identity()
        self.transform = BatchTransform()
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)}")
        with torch.inference_mode():
            return self.head(self.backbone(self.transform(images.to(torch.uint8)))).float()
