"""Malformed input, generated: every reader either accepts a file or rejects it with a one-line FewshotError
naming it — never another exception (a traceback for a user mistake)."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig, FinetuneConfig, PretrainConfig
from fewshot.data.cache import ImageBank
from fewshot.data.tables import read_image_csv
from fewshot.data.testcase import load_fixed_episodes
from fewshot.errors import FewshotError, one_line
from fewshot.search import load_space

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Keys a user might write, right and wrong, so generated configs reach deep into validation.
KEYS = ["method", "data", "root", "image_size", "train", "epochs", "optim", "lr", "name", "model", "distance",
        "train_episode", "way", "shot", "query", "byol", "tau_base", "view1", "crop_scale", "lr_scale", "stem",
        "params", "fixed", "type", "low", "high", "log", "choices", "grid", "samples", "asha", "grace_period",
        "train.optim.lr", "train_episode.way", "lrr", ""]  # fmt: skip
SCALARS = st.none() | st.booleans() | st.integers(-5, 100) | st.floats(allow_nan=True) | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4), max_leaves=12)  # fmt: skip
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def _accepts_or_names(path: Path, read, *also: Path) -> None:
    """``read(path)`` succeeds, or raises a one-line FewshotError that names the file it came from (``path``,
    or one of the files ``also`` read beside it)."""
    try:
        read(path)
    except FewshotError as err:
        message = str(err)
        assert message.strip() and "\n" not in message.strip(), message
        assert any(str(p) in message for p in (path, *also)), f"names no file: {message}"


@FUZZ
@given(st.one_of(st.text(max_size=200), DOCUMENTS.map(lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_configs_of_every_kind_are_accepted_or_rejected_by_name(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "config.yaml", text)
    for kind in (ExperimentConfig, PretrainConfig, FinetuneConfig):
        _accepts_or_names(path, lambda p, kind=kind: load_config(kind, p))


@FUZZ
@given(st.text(max_size=40), VALUES)
def test_overrides_are_accepted_or_rejected_by_name(tmp_path: Path, key: str, value: object) -> None:
    override = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
    try:
        load_config(ExperimentConfig, None, [override])
    except FewshotError as err:  # one line that names what was wrong: the override's key (or its text)
        message = str(err)
        assert message.strip() and "\n" not in message.strip(), message
        parts = [one_line(part.strip()).replace("\\", "") for part in key.split("=")[0].split(".") if part.strip()]
        shown = message.replace("\\", "")  # control characters appear escaped (once, or again by repr)
        assert any(part in shown for part in parts) or "override" in message, message


@FUZZ
@given(st.one_of(st.text(max_size=200), DOCUMENTS.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                 st.fixed_dictionaries({"method": st.sampled_from(["protonet", "byol", "finetune", "x"]),
                                        "params": st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3)})
                 .map(yaml.safe_dump)))  # fmt: skip
def test_search_spaces_are_accepted_or_rejected_by_name(tmp_path: Path, text: str) -> None:
    _accepts_or_names(_write(tmp_path, "space.yaml", text), load_space)


CELLS = st.text(alphabet=string.ascii_letters + string.digits + ' ,."\n_-./é', max_size=12)


@FUZZ
@given(st.lists(st.lists(CELLS, max_size=5), max_size=6), st.booleans())
@example(rows=[['"'], ['"']], header=False)  # found: a quoted newline as the only column name
def test_image_csvs_are_accepted_or_rejected_by_name(tmp_path: Path, rows: list[list[str]], header: bool) -> None:
    (tmp_path / "split").mkdir(exist_ok=True)
    lines = [["id", "filename", "label"]] * header + rows
    path = _write(tmp_path, "split.csv", "\n".join(",".join(row) for row in lines))
    _accepts_or_names(path, read_image_csv)


def _bank() -> ImageBank:
    ids = tuple(f"im{i}" for i in range(12))
    return ImageBank(torch.zeros(12, 3, 4, 4, dtype=torch.uint8), torch.arange(12) // 4, ("a", "b", "c"), ids)


ID_CELLS = st.sampled_from([f"im{i}" for i in range(12)] + ["", "im99", "x", "0", "-1", "1.5"])


@FUZZ
@given(st.lists(st.lists(ID_CELLS, min_size=0, max_size=8), max_size=4), st.booleans(),
       st.lists(st.lists(st.sampled_from(["0", "1", "2", "3", "-1", "", "a"]), max_size=6), max_size=4))  # fmt: skip
def test_testcase_files_are_accepted_or_rejected_by_name(
    tmp_path: Path, rows: list[list[str]], with_truth: bool, truth: list[list[str]]
) -> None:
    header = ["episode_id", "query0", "query1", "query2", "query3", "query4", "query5"]
    body = [[str(i), *row] for i, row in enumerate(rows)]
    path = _write(tmp_path, "val_testcase.csv", "\n".join(",".join(r) for r in [header, *body]))
    gt = tmp_path / "val_testcase_gt.csv"
    gt.unlink(missing_ok=True)
    if with_truth:
        _write(
            tmp_path,
            gt.name,
            "\n".join(",".join(r) for r in [["episode_id", "query0"], *[[str(i), *t] for i, t in enumerate(truth)]]),
        )
    _accepts_or_names(path, lambda p: load_fixed_episodes(p, _bank(), way=2, shot=1), gt)


def test_a_well_formed_testcase_is_accepted(tmp_path: Path) -> None:
    """The generator above can produce valid files: the property is not vacuous."""
    header = "episode_id,support0,support1,query0,query1"
    path = _write(tmp_path, "val_testcase.csv", f"{header}\n0,im0,im4,im1,im5\n")
    _write(tmp_path, "val_testcase_gt.csv", "episode_id,query0,query1\n0,0,1\n")
    _, episodes = load_fixed_episodes(path, _bank(), way=2, shot=1)
    assert np.array_equal(episodes[0].query_labels.numpy(), [0, 1])


# Images as users' folders hold them: every PIL mode, every size, cut short, with another format's magic.
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def _encoded(mode: str, size: tuple[int, int], fmt: str) -> bytes | None:
    """``mode`` image of ``size`` saved as ``fmt``, or None when PIL cannot write that combination."""
    import io

    from PIL import Image

    rng = np.random.default_rng(size[0] * 7 + size[1])
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert("RGB")
    try:
        image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError):
        return None
    return buffer.getvalue()


@FUZZ
@given(st.sampled_from(MODES), st.tuples(st.integers(1, 48), st.integers(1, 48)), st.sampled_from(sorted(FORMATS)),
       st.sampled_from(["whole", "cut", "magic", "noise", "empty"]), st.booleans())  # fmt: skip
def test_images_are_decoded_or_refused_by_name(
    tmp_path: Path, mode: str, size: tuple[int, int], fmt: str, damage: str, resize: bool
) -> None:
    from fewshot.data.cache import load_bank

    raw = _encoded(mode, size, fmt)
    if raw is None:
        return
    raw = {"whole": raw, "cut": raw[: len(raw) // 2], "magic": b"\x89PNG\r\n\x1a\n" + raw[8:],
           "noise": bytes(np.random.default_rng(len(raw)).integers(0, 256, len(raw), dtype=np.uint8)),
           "empty": b""}[damage]  # fmt: skip
    (tmp_path / "split").mkdir(exist_ok=True)
    image = tmp_path / "split" / f"a{FORMATS[fmt]}"
    image.write_bytes(raw)
    csv = _write(tmp_path, "split.csv", f"id,filename,label\n0,{image.name},x\n")
    try:
        bank = load_bank(read_image_csv(csv), 16, resize, tmp_path / "banks")
    except FewshotError as err:
        message = str(err)
        assert "\n" not in message and str(csv) in message and str(image) in message, message
        return
    assert bank.images.shape == (1, 3, 16, 16) and bank.images.dtype == torch.uint8
    assert damage in ("whole", "cut", "magic") and (resize or size == (16, 16))  # noise or nothing is no image


def _checkpoint_files(folder: Path) -> dict[str, Path]:
    """Checkpoints as they go wrong: empty, cut short, random, a foreign dict, a list, another run's."""
    import torchvision

    from fewshot.checkpoint import save_checkpoint
    from fewshot.config.loading import config_dict
    from fewshot.config.schema import FinetuneConfig
    from fewshot.methods.build import build_method

    config = load_config(ExperimentConfig, None, ["method=hallucination"])
    whole = folder / "whole.pt"
    save_checkpoint(whole, {"epoch": 1, "model": build_method(config).state_dict(), "config": config_dict(config)})
    files = {name: folder / f"{name}.pt" for name in ("empty", "cut", "noise", "foreign", "list", "other-run",
                                                       "other-weights")}  # fmt: skip
    files["empty"].write_bytes(b"")
    files["cut"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    files["noise"].write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    torch.save(torchvision.models.resnet18().state_dict(), files["foreign"])
    torch.save([1, 2, 3], files["list"])
    fine = FinetuneConfig()
    save_checkpoint(files["other-run"], {"epoch": 1, "model": {}, "config": config_dict(fine)})
    protonet = build_method(load_config(ExperimentConfig, None, [])).state_dict()
    save_checkpoint(files["other-weights"], {"epoch": 1, "model": protonet, "config": config_dict(config)})
    return files


def test_checkpoints_are_loaded_or_refused_by_name(tmp_path: Path) -> None:
    from fewshot.methods.build import load_method

    for name, path in _checkpoint_files(tmp_path).items():
        try:
            load_method(path)
        except FewshotError as err:
            message = str(err)
            assert "\n" not in message and str(path) in message, f"{name}: {message}"
            assert "weights_only=False" not in message, f"{name}: {message}"
        else:
            raise AssertionError(f"{name}: a broken checkpoint was loaded")
    config, _ = load_method(tmp_path / "whole.pt")
    assert config.method == "hallucination"
