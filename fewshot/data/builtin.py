"""The built-in synthetic dataset, in the course's Fall-2021 layout, so real and built-in data share readers.

``mini/{train,val,test}.csv`` with ``mini/{train,val,test}/*.jpg`` (disjoint class sets, as in the Ravi
split), ``mini/val_testcase.csv`` + ``mini/val_testcase_gt.csv`` (600 fixed 5-way 1-shot 15-query episodes, as
the course ships them) and ``office/{train,val}.csv`` with ``office/{train,val}/*.jpg`` (the same classes in both).

Each class is a random constellation from one shared family: 2-4 primitives (disc, square, ring, triangle,
bar, cross) at class-specific relative positions, sizes and angles, filled with a class-specific grating.
Each image poses it randomly (rotation, scale, shift) and draws its colours independently of the class, from
a palette of foreground/background pairs that both domains share, so the class lives in shape and layout,
never in colour, and what is learnt on some classes transfers to new ones. The Office-like set uses the same
family under its own seeds with cluttered, textured backgrounds.

Generation is deterministic (one seeded ``torch.Generator`` per class) and atomic (built in a temporary
sibling folder, then renamed into place), so concurrent callers never see half a dataset.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torchvision.io import encode_jpeg

from fewshot.config.schema import EpisodeSpec
from fewshot.data.tables import read_image_csv
from fewshot.data.testcase import generate_testcase, write_fixed_episodes
from fewshot.errors import ConfigError, DataError
from fewshot.paths import cache_root

log = logging.getLogger(__name__)

# _VERSION names the cache folder and changes with the layout; _REVISION changes whenever the pictures
# do, so a cache rendered by older code is never mistaken for the current dataset.
_VERSION = "v1"
_REVISION = 5
_MARKER = "builtin.json"
_JPEG_QUALITY = 90
# A temporary build folder this old cannot belong to a live build (a default build takes seconds).
_STALE_SECONDS = 3600.0
_N_KINDS = 6  # disc, square, ring, triangle, bar, cross
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # Rec. 601 brightness weights
# Colour pairs an image draws from. A palette, not free colours: with six free colour channels per image, colour
# is a near-unique code of each picture, which self-supervised pre-training learns instead of shape (exploratory
# BYOL runs, ResNet-18 at 32 px, 5 epochs, logistic regression on the 20 test classes' features: 6.1 % with free
# colours against 4.8 % untrained; 13.7 % with 16 pairs against 4.3 %).
_PALETTE_PAIRS = 16


@dataclass(frozen=True)
class BuiltinSpec:
    """Sizes and seed of the built-in dataset; equal specs give byte-identical files."""

    seed: int = 0
    image_size: int = 84
    train_classes: int = 64
    val_classes: int = 16
    test_classes: int = 20
    images_per_class: int = 60
    office_classes: int = 65
    office_train_per_class: int = 20
    office_val_per_class: int = 6
    office_image_size: int = 96

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "seed" and value < 1:
                raise ConfigError(f"BuiltinSpec.{name} must be >= 1, got {value}")
        for name in ("image_size", "office_image_size"):
            if getattr(self, name) < 16:
                raise ConfigError(f"BuiltinSpec.{name} must be >= 16 pixels, got {getattr(self, name)}")


@dataclass(frozen=True)
class _Style:
    """Nuisance settings of one domain: what varies per image but carries no class information."""

    clutter: int  # distractor primitives behind the object
    bg_texture: float  # amplitude of a random background grating
    noise: float  # std of per-pixel Gaussian noise (on a 0..1 scale)


_MINI_STYLE = _Style(clutter=0, bg_texture=0.0, noise=0.03)
_OFFICE_STYLE = _Style(clutter=4, bg_texture=0.35, noise=0.05)


def builtin_root(spec: BuiltinSpec = BuiltinSpec()) -> Path:  # frozen, so a shared default is safe
    """Where the dataset for ``spec`` lives in the cache: ``cache_root()/builtin-v1-<hash of spec>``."""
    return cache_root() / f"builtin-{_VERSION}-{_spec_hash(spec)}"


def ensure_builtin(spec: BuiltinSpec = BuiltinSpec(), root: Path | None = None) -> Path:
    """Return the root of the built-in dataset for ``spec``, generating it on first use.

    Safe to call from many processes at once: one builds (under a file lock where the filesystem honours
    it) into a temporary sibling folder and renames it into place; the others wait or, if they built too,
    discard their copy and use the winner's.
    """
    root = Path(root) if root is not None else builtin_root(spec)
    if root.exists():
        return _check_existing(root, spec)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(root):
        if root.exists():  # another process built it while we waited for the lock
            return _check_existing(root, spec)
        _remove_stale_builds(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            with _single_threaded():
                _generate(spec, tmp)
            _publish(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed
    return _check_existing(root, spec)


def _identity(spec: BuiltinSpec) -> dict:
    """What a generated folder is: recorded in its marker file and hashed into its cache name."""
    return {"version": _VERSION, "revision": _REVISION, "spec": asdict(spec)}


def _spec_hash(spec: BuiltinSpec) -> str:
    text = json.dumps(_identity(spec), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_existing(root: Path, spec: BuiltinSpec) -> Path:
    """Refuse a folder that is not this spec's dataset, rather than silently train on something else."""
    marker = root / _MARKER
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{root} exists but is not a built-in dataset (no readable {_MARKER})") from exc
    expected = _identity(spec)
    if found != expected:
        raise DataError(f"{root} holds a built-in dataset for another spec: {found} (wanted {expected})")
    return root


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Serialise builders on one host, so N Ray workers do not all render the same dataset at once.

    Correctness does not depend on it (the rename is atomic); it only saves CPU. The lock file is left
    behind on purpose: deleting it would race with a process that is about to lock it.
    """
    with open(root.parent / f".{root.name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_builds(root: Path) -> None:
    """Delete temporary folders left by crashed builds; recent ones may belong to a live builder elsewhere."""
    now = time.time()
    for leftover in root.parent.glob(f".{root.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > _STALE_SECONDS:
                log.info("removing leftover build folder %s", leftover)
                shutil.rmtree(leftover, ignore_errors=True)


def _publish(tmp: Path, root: Path) -> None:
    try:
        os.rename(tmp, root)
    except OSError:
        if not root.exists():
            raise
        # Lost the race to a builder the lock could not see (e.g. another node): theirs is identical.
        log.info("%s was created by another process; discarding this build", root)


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Render on one intra-op thread: the batches are small, and beside a busy trainer more threads only fight
    it for cores (default spec on 2 cores beside a 2-thread trainer: 114 s multi-threaded, 9 s on one thread).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generate(spec: BuiltinSpec, out: Path) -> None:
    """Write the whole dataset for ``spec`` under ``out`` (a fresh, private folder)."""
    start = time.perf_counter()
    n_mini = spec.train_classes + spec.val_classes + spec.test_classes
    width = max(3, len(str(n_mini - 1)))
    bounds = {"train": (0, spec.train_classes), "val": (spec.train_classes, n_mini - spec.test_classes)}
    bounds["test"] = (n_mini - spec.test_classes, n_mini)
    for split, (lo, hi) in bounds.items():
        rows = []
        for index in range(lo, hi):
            label = f"syn{index:0{width}d}"
            images = _render_class(spec.seed, "mini", index, spec.images_per_class, spec.image_size)
            rows += _write_images(out / "mini" / split, label, images)
        _finish_split(out / "mini" / f"{split}.csv", rows, start)
    _write_val_testcase(spec, out / "mini")
    office: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    n_office = spec.office_train_per_class + spec.office_val_per_class
    for index in range(spec.office_classes):
        label = f"office_glyph_{index:02d}"
        images = _render_class(spec.seed, "office", index, n_office, spec.office_image_size)
        office["train"] += _write_images(out / "office" / "train", label, images[: spec.office_train_per_class])
        office["val"] += _write_images(out / "office" / "val", label, images[spec.office_train_per_class :])
    for split, rows in office.items():
        _finish_split(out / "office" / f"{split}.csv", rows, start)
    (out / _MARKER).write_text(json.dumps(_identity(spec), sort_keys=True))
    log.info("built-in dataset generated in %.1f s", time.perf_counter() - start)


def _write_val_testcase(spec: BuiltinSpec, folder: Path) -> None:
    """The course's ``val_testcase.csv`` (+ ``_gt.csv``): 600 fixed 5-way 1-shot 15-query episodes, when the
    validation split can fill them."""
    episode = EpisodeSpec(way=5, shot=1, query=15)
    if spec.val_classes < episode.way or spec.images_per_class < episode.shot + episode.query:
        return
    testcase, truth = generate_testcase(read_image_csv(folder / "val.csv"), episode, 600, spec.seed)
    write_fixed_episodes(folder / "val_testcase.csv", testcase, truth)


def _write_images(folder: Path, label: str, images: torch.Tensor) -> list[tuple[str, str]]:
    """Encode a uint8 batch (N, 3, H, W) to JPEG files ``<label>_<j>.jpg``; return (filename, label) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for j, data in enumerate(encode_jpeg(list(images), quality=_JPEG_QUALITY)):
        name = f"{label}_{j:04d}.jpg"
        (folder / name).write_bytes(data.numpy().tobytes())
        rows.append((name, label))
    return rows


def _finish_split(csv_path: Path, rows: list[tuple[str, str]], start: float) -> None:
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "filename", "label"])
        writer.writerows((i, name, label) for i, (name, label) in enumerate(rows))
    # Name the split, not the path: the build folder is temporary.
    split, n_classes = f"{csv_path.parent.name}/{csv_path.stem}", len({label for _, label in rows})
    log.info("built-in %s: %d images, %d classes (%.1f s)", split, len(rows), n_classes, time.perf_counter() - start)


def _generator(seed: int, domain: str, index: int) -> torch.Generator:
    """One stream per class, so a class's images do not depend on how many other classes there are."""
    digest = hashlib.sha256(f"{seed}:{domain}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def _rotate(x: torch.Tensor, y: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate coordinates by ``-angle``: maps image coordinates into a frame turned by ``angle``."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return cos * x + sin * y, -sin * x + cos * y


def _shape_distance(kind: int, qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) to a unit-radius primitive, in units of its radius."""
    if kind == 0:  # disc
        return torch.hypot(qx, qy) - 1.0
    if kind == 1:  # square
        return torch.maximum(qx.abs(), qy.abs()) - 0.85
    if kind == 2:  # ring
        return (torch.hypot(qx, qy) - 0.72).abs() - 0.28
    if kind == 3:  # equilateral triangle with circumradius 1: outward edge normals at 90, 210, 330 deg
        edges = [math.cos(a) * qx + math.sin(a) * qy for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
        return torch.maximum(torch.maximum(edges[0], edges[1]), edges[2]) - 0.5
    bar = torch.maximum(qx.abs() - 1.0, qy.abs() - 0.3)
    if kind == 4:  # bar
        return bar
    return torch.minimum(bar, torch.maximum(qy.abs() - 1.0, qx.abs() - 0.3))  # cross


def _coverage(distance: torch.Tensor, pixels_per_unit: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] from a distance field, with a one-pixel soft edge."""
    return (0.5 - distance * pixels_per_unit).clamp(0.0, 1.0)


def _sample_class(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A class: its primitives (kind, centre, radius, angle) in the object frame, and its fill grating."""
    k = int(torch.randint(2, 5, (1,), generator=gen))
    return {
        "kinds": torch.randint(0, _N_KINDS, (k,), generator=gen),
        "centres": _uniform(gen, (k, 2), -0.5, 0.5),
        "radii": _uniform(gen, (k,), 0.2, 0.4),
        "angles": _uniform(gen, (k,), 0.0, 2 * math.pi),
        "texture": torch.cat([_uniform(gen, (1,), 1.5, 5.0), _uniform(gen, (1,), 0.0, math.pi)]),
    }


def _palette(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's foreground/background colour pairs, (P, 3) each, shared by both domains.

    For each random background, of eight candidate foregrounds the first whose brightness differs enough from
    it is kept (else the most different): shapes then show as luminance edges, which a CNN learns quickly.
    """
    gen = _generator(seed, "palette", 0)
    bg = torch.rand((_PALETTE_PAIRS, 3), generator=gen)
    candidates = torch.rand((_PALETTE_PAIRS, 8, 3), generator=gen)
    gap = ((candidates - bg[:, None]) @ _LUMA).abs()
    enough = gap > 0.25
    pick = torch.where(enough.any(1), enough.float().argmax(1), gap.argmax(1))
    return candidates[torch.arange(_PALETTE_PAIRS), pick], bg


def _sample_colours(
    gen: torch.Generator, n: int, palette: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground/background colours of ``n`` images: palette pairs drawn uniformly, independently of the class."""
    pair = torch.randint(0, palette[0].shape[0], (n,), generator=gen)
    return palette[0][pair], palette[1][pair]


def _render_class(seed: int, domain: str, index: int, n: int, size: int) -> torch.Tensor:
    """Render ``n`` images of class ``index`` of ``domain`` as a uint8 tensor (n, 3, size, size)."""
    gen = _generator(seed, domain, index)
    cls = _sample_class(gen)
    style = _OFFICE_STYLE if domain == "office" else _MINI_STYLE
    fg, bg = _sample_colours(gen, n, _palette(seed))
    axis = torch.linspace(-1.0, 1.0, size)
    py, px = torch.meshgrid(axis, axis, indexing="ij")
    image = _background(gen, bg, px, py, style)
    # A random pose per image; everything below is drawn in the object frame, so it moves with the pose.
    angle, scale = _uniform(gen, (n, 1, 1), -0.4, 0.4), _uniform(gen, (n, 1, 1), 0.75, 1.1)
    shift = _uniform(gen, (n, 2, 1, 1), -0.2, 0.2)
    ux, uy = _rotate(px - shift[:, 0], py - shift[:, 1], angle)
    ux, uy = ux / scale, uy / scale
    freq, tex_angle = cls["texture"]
    # Random phase: only the grating's frequency and orientation are the class's, not where its stripes fall.
    phase = _uniform(gen, (n, 1, 1), 0.0, 2 * math.pi)
    fill = 1.0 - 0.45 * (0.5 + 0.5 * torch.sin(2 * math.pi * freq * _rotate(ux, uy, tex_angle)[0] + phase))
    for kind, centre, radius, rot in zip(cls["kinds"], cls["centres"], cls["radii"], cls["angles"], strict=True):
        qx, qy = _rotate((ux - centre[0]) / radius, (uy - centre[1]) / radius, rot)
        mask = _coverage(_shape_distance(int(kind), qx, qy), radius * scale * size / 2)[:, None]
        tint = 1.0 + _uniform(gen, (n, 3, 1, 1), -0.1, 0.1)  # shapes of one image differ a little
        image = image * (1 - mask) + (fg[:, :, None, None] * tint * fill[:, None]).clamp(0, 1) * mask
    return _finish(gen, image, style)


def _background(
    gen: torch.Generator, bg: torch.Tensor, px: torch.Tensor, py: torch.Tensor, style: _Style
) -> torch.Tensor:
    """Background: the colour under an illumination gradient, plus the domain's texture and clutter."""
    n, size = bg.shape[0], px.shape[0]
    slope = _uniform(gen, (n, 2, 1, 1), -0.25, 0.25)
    image = bg[:, :, None, None] * (1 + slope[:, 0:1] * px + slope[:, 1:2] * py)
    if style.bg_texture > 0:
        freq, angle = _uniform(gen, (n, 1, 1), 2.0, 8.0), _uniform(gen, (n, 1, 1), 0.0, math.pi)
        wave = torch.sin(2 * math.pi * freq * _rotate(px, py, angle)[0])
        image = image * (1 + style.bg_texture * wave[:, None] / 2)
    for _ in range(style.clutter):
        kinds = torch.randint(0, _N_KINDS, (n,), generator=gen)
        centre, radius = _uniform(gen, (n, 2, 1, 1), -0.9, 0.9), _uniform(gen, (n, 1, 1), 0.06, 0.16)
        qx, qy = _rotate(
            (px - centre[:, 0]) / radius, (py - centre[:, 1]) / radius, _uniform(gen, (n, 1, 1), 0.0, 2 * math.pi)
        )
        distances = torch.stack([_shape_distance(k, qx, qy) for k in range(_N_KINDS)], dim=1)
        distance = distances.gather(1, kinds.view(n, 1, 1, 1).expand(n, 1, size, size))
        mask = _coverage(distance, radius[:, None] * size / 2)
        image = image * (1 - mask) + torch.rand((n, 3, 1, 1), generator=gen) * mask
    return image.clamp(0, 1)


def _finish(gen: torch.Generator, image: torch.Tensor, style: _Style) -> torch.Tensor:
    """Per-image contrast/brightness jitter and pixel noise, then quantise to uint8."""
    n = image.shape[0]
    contrast, brightness = _uniform(gen, (n, 1, 1, 1), 0.7, 1.2), _uniform(gen, (n, 1, 1, 1), -0.1, 0.1)
    image = (image - 0.5) * contrast + 0.5 + brightness
    image = image + style.noise * torch.randn(image.shape, generator=gen)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
