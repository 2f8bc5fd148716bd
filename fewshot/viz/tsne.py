"""t-SNE of real and hallucinated features: does the generator add features that look like their class?

Real features of a few validation classes are drawn as ×, the features hallucinated from one support image of
each class as ▲, one colour per class (scikit-learn's TSNE, a fixed seed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from fewshot.data.cache import ImageBank, load_bank
from fewshot.data.splits import BankLoader, data_root
from fewshot.data.tables import open_split
from fewshot.data.transforms import BatchTransform
from fewshot.errors import ConfigError
from fewshot.methods.afhn import AFHN
from fewshot.methods.build import load_method
from fewshot.methods.hallucination import HallucinationNet
from fewshot.viz.plots import save_figure


def checkpoint_tsne(
    checkpoint: Path,
    path: Path,
    device: torch.device | str = "cpu",
    root: Path | None = None,
    split: str | None = None,
    load: BankLoader = load_bank,
    **options: int,
) -> Path:
    """:func:`hallucination_tsne` of the hallucinating method in ``checkpoint``, on ``split`` (default: the
    validation split) of the data it was trained on (or of the dataset at ``root``), decoded through ``load``."""
    config, method = load_method(checkpoint, device)
    if not isinstance(method, HallucinationNet | AFHN):
        raise ConfigError(
            f"{checkpoint} holds a {config.method} model, which hallucinates no features "
            "(use a hallucination or afhn checkpoint)"
        )
    data = config.data.model_copy(update={"root": root}) if root is not None else config.data
    bank = load(open_split(data_root(data), split or data.val_split), data.image_size, data.resize, data.cache_dir)
    return hallucination_tsne(method, bank, path, torch.device(device), **options)


@torch.no_grad()
def hallucination_tsne(
    method: HallucinationNet | AFHN,
    bank: ImageBank,
    path: Path,
    device: torch.device = torch.device("cpu"),
    classes: int = 5,
    per_class: int = 30,
    fakes: int = 30,
    seed: int = 0,
) -> Path:
    """Embed ``per_class`` images of the first ``classes`` classes of ``bank``, hallucinate ``fakes`` features
    from the first image of each class with ``method.hallucinate``, and plot both in 2-D."""
    method.eval()
    rows = [torch.nonzero(bank.labels == c).flatten()[:per_class] for c in range(min(classes, len(bank.classes)))]
    images = BatchTransform(flip=False)(bank.images[torch.cat(rows)].to(device))
    real = method.encoder(images)
    starts = np.cumsum([0, *[len(r) for r in rows[:-1]]])
    fake = method.hallucinate(real[torch.as_tensor(starts)], fakes).flatten(0, 1)
    points = torch.cat([real, fake]).float().cpu().numpy()
    from sklearn.manifold import TSNE  # here: every training worker imports this module, few runs draw a t-SNE

    tsne = TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca", random_state=seed)
    embedded = tsne.fit_transform(points)
    real_xy, fake_xy = embedded[: len(real)], embedded[len(real) :]
    fig, ax = plt.subplots(figsize=(6.4, 5.4), layout="constrained")
    colours = plt.get_cmap("tab10")
    for c, class_rows in enumerate(rows):
        name, colour, start = bank.classes[c], colours(c), int(starts[c])
        (x, y), (fx, fy) = real_xy[start : start + len(class_rows)].T, fake_xy[c * fakes : (c + 1) * fakes].T
        ax.scatter(x, y, marker="x", color=colour, s=30, label=f"{name} (real)")
        ax.scatter(fx, fy, marker="^", color=colour, s=22, alpha=0.55, label=f"{name} (hallucinated)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE: real (×) and hallucinated (▲) features, {len(rows)} validation classes")
    return save_figure(fig, path)
