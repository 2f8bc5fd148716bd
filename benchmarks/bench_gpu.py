"""The GPU path, measured: training episodes/s with the images in host memory or resident on the device, in
float32 or AMP; BYOL's views drawn image by image or as one batch; and several trials sharing one GPU.

    python benchmarks/bench_gpu.py [--episodes 50] [--way 30] [--image-size 84] [--trials 1 2 4]

1. ProtoNet (Conv4) training steps of ``--way``-way 1-shot 15-query episodes of the built-in data, through
   the project's own step (:meth:`Trainer.train_step`), for each of host/resident images x float32/AMP. On a
   GPU each row also gives the GPU's mean utilisation while it ran (sampled by ``nvidia-smi``).
2. BYOL's view 1 on a batch of 128 images: torchvision v2 applied image by image (what a batch needs for
   per-image randomness with torchvision) against :class:`~fewshot.data.views.ViewTransform` (kornia, batched).
3. ``--trials`` concurrent trials as Ray tasks, each holding ``1/K`` of the GPU (on a CPU: one core each), each
   training ``--episodes`` episodes; the aggregate episodes/s is what a study gets from one device.

Runs on a CPU too (AMP rows use bfloat16, slower there; no utilisation figure). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import torch
from torchvision.transforms import v2

from fewshot.config.loading import load_config
from fewshot.config.schema import ByolConfig, ExperimentConfig, ViewConfig
from fewshot.data.cache import load_bank
from fewshot.data.splits import load_fewshot_data, resident_loader
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fewshot.data.views import ViewTransform
from fewshot.methods.build import build_method
from fewshot.runtime import select_device, tune_allocator
from fewshot.training.loop import Placement, Trainer
from fewshot.training.tasks import EpisodeTask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[int], object], n: int, device: torch.device, warmup: int = 3) -> float:
    """Calls of ``step(i)`` a second over ``n`` calls after ``warmup`` untimed ones (the device drained)."""
    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(n):
        step(warmup + i)
    sync(device)
    return n / (time.perf_counter() - start)


@contextmanager
def utilisation(device: torch.device) -> Iterator[list[float]]:
    """Samples the GPU's utilisation (%) every 100 ms while the block runs; empty on a CPU or without nvidia-smi."""
    samples: list[float] = []
    smi = shutil.which("nvidia-smi")
    if device.type != "cuda" or smi is None:
        yield samples
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    query = [smi, f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
    with subprocess.Popen(query, stdout=subprocess.PIPE, text=True) as sampler:
        try:
            yield samples
        finally:
            sampler.terminate()
            out, _ = sampler.communicate()
            samples.extend(float(line) for line in out.split() if line.strip().isdigit())


def percent(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f}%"  # NaN: nothing sampled (a CPU)


def experiment_config(args: argparse.Namespace, amp: bool | None, resident: bool | None) -> ExperimentConfig:
    overrides = [f"data.image_size={args.image_size}", f"train_episode.way={args.way}", "train_episode.shot=1",
                 "train_episode.query=15", f"train.amp={'null' if amp is None else amp}",
                 f"train.resident={'null' if resident is None else resident}"]  # fmt: skip
    return load_config(ExperimentConfig, None, overrides)


def trainer(args: argparse.Namespace, device: torch.device, amp: bool | None, resident: bool | None) -> Trainer:
    """The project's training loop on the built-in data, its splits kept on ``device`` as ``resident`` says."""
    config = experiment_config(args, amp, resident)
    load = resident_loader(load_bank, device, config.train.resident)
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode, load=load)
    torch.manual_seed(0)
    return Trainer(config, build_method(config), EpisodeTask(config, data), Path(tempfile.mkdtemp()),
                   Placement(device=device))  # fmt: skip


def training_rate(args: argparse.Namespace, device: torch.device, amp: bool, resident: bool) -> tuple[float, float]:
    """(episodes/s, mean GPU utilisation %) of the project's training step."""
    step = trainer(args, device, amp, resident).train_step
    with utilisation(device) as samples:
        episodes_per_s = rate(step, args.episodes, device)
    return episodes_per_s, sum(samples) / len(samples) if samples else float("nan")


def per_image_views(config: ViewConfig, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """BYOL's view with torchvision v2, one image at a time (per-image randomness), as a batch needs it."""
    kernel = max(3, (size // 10) | 1)
    transform = v2.Compose([
        v2.RandomResizedCrop(size, scale=config.crop_scale, antialias=True),
        v2.RandomHorizontalFlip(config.flip_p),
        v2.RandomApply([v2.ColorJitter(*config.jitter)], p=config.jitter_p),
        v2.RandomGrayscale(config.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=config.blur_sigma)], p=config.blur_p),
        v2.RandomSolarize(threshold=128, p=config.solarize_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
    ])  # fmt: skip
    return lambda images: torch.stack([transform(image) for image in images])


def view_rates(device: torch.device, size: int, batch: int = 128, n: int = 10) -> tuple[float, float]:
    """Images/s of BYOL's view 1: per image with torchvision, batched with kornia."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    config = ByolConfig().view1
    slow, fast = per_image_views(config, size), ViewTransform(config, size)
    return (batch * rate(lambda i: slow(images), n, device, warmup=1),
            batch * rate(lambda i: fast(images), n, device, warmup=1))  # fmt: skip


@ray.remote
def trial(args: argparse.Namespace, device_name: str) -> tuple[float, float]:
    """One trial's training loop on its share of the device, with the defaults (AMP and residency where they
    help): (start, end) of its timed episodes."""
    tune_allocator()
    device = select_device(device_name)
    step = trainer(args, device, amp=None, resident=None).train_step
    for i in range(3):
        step(i)
    sync(device)
    start = time.time()
    for i in range(args.episodes):
        step(3 + i)
    sync(device)
    return start, time.time()


def shared_rate(args: argparse.Namespace, device: torch.device, k: int) -> tuple[float, float]:
    """(aggregate episodes/s, mean GPU utilisation %) of ``k`` trials at once on one device."""
    share = {"num_gpus": 1 / k, "num_cpus": 0} if device.type == "cuda" else {"num_cpus": 1}
    with utilisation(device) as samples:
        spans = ray.get([trial.options(**share).remote(args, device.type) for _ in range(k)])
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return k * args.episodes / wall, sum(samples) / len(samples) if samples else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50, help="timed training episodes per measurement")
    parser.add_argument("--way", type=int, default=30, help="training episodes' way (1-shot, 15 queries)")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4], help="trials sharing the device")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    tune_allocator()
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"{time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}; {args.way}-way 1-shot 15-query "
          f"episodes at {args.image_size} px, {args.episodes} timed episodes each\n")  # fmt: skip

    print("| images | precision | episodes/s | GPU utilisation |\n|---|---|---|---|")
    for resident in (False, True) if device.type == "cuda" else (False,):
        for amp in (False, True):
            episodes_per_s, busy = training_rate(args, device, amp, resident)
            where = "resident on the GPU" if resident else "host memory"
            print(f"| {where} | {'AMP' if amp else 'float32'} | {episodes_per_s:.2f} | {percent(busy)} |")

    per_image, batched = view_rates(device, args.image_size)
    print(f"\nBYOL view 1 at {args.image_size} px, batch 128: per image {per_image:.0f} images/s, "
          f"batched {batched:.0f} images/s ({batched / per_image:.1f}x)\n")  # fmt: skip

    ray.init(num_gpus=torch.cuda.device_count() if device.type == "cuda" else 0, include_dashboard=False)
    print("| trials at once | episodes/s, all trials | GPU utilisation |\n|---|---|---|")
    for k in args.trials:
        total, busy = shared_rate(args, device, k)
        print(f"| {k} | {total:.2f} | {percent(busy)} |")
    ray.shutdown()


if __name__ == "__main__":
    main()
