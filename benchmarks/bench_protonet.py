"""ProtoNet speed on this machine: the project's training and evaluation paths against a naive loop.

    python benchmarks/bench_protonet.py [--episodes 12] [--image-size 84]

All in one process, in this order (the allocator setting cannot be undone once applied):
1. naive: PIL decode + per-image torchvision transforms every episode, default glibc allocator, contiguous
   tensors — training steps, then evaluation episodes;
2. the project's path: allocator tuned (``fewshot.runtime.tune_allocator``), decoded uint8 bank indexed per
   episode, batch flip/normalise, channels_last — training, then evaluation;
3. the compute limit: the same training step on one episode's tensors already in memory;
4. a run's final score: all the report episodes (600) through ``evaluate``, which encodes each image once,
   against the same episodes one by one.
Prints median episodes/s of each and the ratios the issue asks for (train ≥ 2.3× naive and ≥ 0.9× the
compute limit; eval ≥ 2× naive), and the seconds of the final score. Timings on a 2-core CPU vary by ±25%
between runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from fewshot.config.loading import load_config
from fewshot.config.schema import EpisodeSpec, ExperimentConfig
from fewshot.data.episodes import Episode, EpisodeSampler
from fewshot.data.splits import load_fewshot_data
from fewshot.data.tables import open_split
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, EpisodeTensors, episode_tensors
from fewshot.evaluation import evaluate
from fewshot.methods.build import build_method
from fewshot.runtime import tune_allocator
from fewshot.training.loop import Trainer
from fewshot.training.tasks import EpisodeTask


def median_rate(run: Callable[[int], object], episodes: int, warmup: int = 2) -> float:
    """Median episodes/s of ``run(i)`` over ``episodes`` calls after ``warmup`` untimed ones."""
    for i in range(warmup):
        run(i)
    times = []
    for i in range(episodes):
        start = time.perf_counter()
        run(warmup + i)
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def naive_batch(paths: list, episode: Episode, train: bool) -> EpisodeTensors:
    steps = [T.RandomHorizontalFlip()] if train else []
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def load(rows: torch.Tensor) -> torch.Tensor:
        return torch.stack([transform(Image.open(paths[r]).convert("RGB")) for r in rows.tolist()])

    spec = episode.spec
    support_labels = episode.support_labels
    return EpisodeTensors(
        load(episode.support), support_labels, load(episode.query), episode.query_labels, spec.way, spec.shot
    )


def train_step(method, optimizer, batch: EpisodeTensors) -> None:
    loss = F.cross_entropy(method.logits(batch), batch.query_labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=12, help="timed episodes per measurement")
    parser.add_argument("--image-size", type=int, default=84)
    args = parser.parse_args()
    # float32 throughout, so the three measure the data path alone (AMP is benchmarks/bench_gpu.py's subject)
    config = load_config(ExperimentConfig, None, [f"data.image_size={args.image_size}", "train.amp=false"])
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    train_paths = list(open_split(config.data.root or data.root, config.data.train_split).paths)
    val_paths = list(open_split(data.root, config.data.val_split).paths)
    sampler = EpisodeSampler(data.train.labels, data.train.classes, EpisodeSpec(way=5, shot=1, query=15), seed=0)
    torch.manual_seed(0)
    method = build_method(config).train()
    optimizer: torch.optim.Optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    n = args.episodes
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {config.eval_episode} at {args.image_size}px")

    naive_train = median_rate(lambda i: train_step(method, optimizer, naive_batch(train_paths, sampler[i], True)), n)
    with torch.inference_mode():
        method.eval()
        naive_eval = median_rate(lambda i: method.logits(naive_batch(val_paths, data.select.episodes[i], False)), n)
        method.train()

    tune_allocator()
    # The project's own training step (Trainer.train_step): bank indexing, batch transform, channels_last.
    trainer = Trainer(config, method, EpisodeTask(config, data), Path(tempfile.mkdtemp()))
    fast_train = median_rate(trainer.train_step, n)
    optimizer = trainer.optimizers[0]
    ready = episode_tensors(sampler[0], data.train, BatchTransform(flip=True))
    compute_limit = median_rate(lambda i: train_step(method, optimizer, ready), n)
    with torch.inference_mode():
        method.eval()
        fast_eval = median_rate(
            lambda i: method.logits(episode_tensors(data.select.episodes[i], data.select.bank, BatchTransform())), n
        )
        report = data.report
        start = time.perf_counter()
        for episode in report.episodes:
            method.logits(episode_tensors(episode, report.bank, BatchTransform())).argmax(1)
        one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(method, report.bank, report.episodes)
    shared = time.perf_counter() - start

    print(f"train  naive {naive_train:6.2f} ep/s | fewshot {fast_train:6.2f} ep/s | limit {compute_limit:6.2f} ep/s")
    print(f"eval   naive {naive_eval:6.2f} ep/s | fewshot {fast_eval:6.2f} ep/s")
    print(f"train speed-up vs naive:         {fast_train / naive_train:5.2f}x  (target >= 2.3x)")
    print(f"train share of the compute limit: {fast_train / compute_limit:5.2f}x  (target >= 0.9x)")
    print(f"eval speed-up vs naive:          {fast_eval / naive_eval:5.2f}x  (target >= 2x)")
    print(
        f"score {len(report.episodes)} report episodes: evaluate {shared:5.1f} s | episode by episode "
        f"{one_by_one:5.1f} s ({one_by_one / shared:.1f}x)"
    )


if __name__ == "__main__":
    main()
