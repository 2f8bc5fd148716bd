from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TVF

from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig
from fewshot.data.cache import ImageBank
from fewshot.data.predictions import read_predictions
from fewshot.data.splits import load_fewshot_data
from fewshot.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, episode_tensors
from fewshot.evaluation import evaluate, linear_probe
from fewshot.methods.build import build_method
from fewshot.training.run import run
from tests.conftest import load_job, run_script, tiny_overrides

REPO = Path(__file__).resolve().parents[1]


def _pil_batch(paths: list[Path]) -> torch.Tensor:
    """The plain path: PIL decode, per-image ToTensor + Normalize, default (contiguous) memory format."""
    images = [TVF.normalize(TVF.to_tensor(Image.open(p).convert("RGB")), IMAGENET_MEAN, IMAGENET_STD) for p in paths]
    return torch.stack(images)


def test_fast_path_gives_the_logits_of_the_plain_path(tiny_builtin: Path) -> None:
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin))
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    torch.manual_seed(0)
    plain = build_method(config).eval()
    fast = build_method(config).eval().to(memory_format=torch.channels_last)
    fast.load_state_dict(plain.state_dict())
    val = data.select.bank
    paths = {image_id: path for image_id, path in zip(val.ids, _val_paths(tiny_builtin), strict=True)}
    for episode in data.select.episodes[:3]:
        batch = episode_tensors(episode, val, BatchTransform())
        assert batch.support.is_contiguous(memory_format=torch.channels_last)
        support = _pil_batch([paths[val.ids[i]] for i in episode.support])
        query = _pil_batch([paths[val.ids[i]] for i in episode.query])
        assert torch.allclose(batch.support, support, atol=1e-6) and torch.allclose(batch.query, query, atol=1e-6)
        plain_batch = type(batch)(support, batch.support_labels, query, batch.query_labels, batch.way, batch.shot)
        with torch.no_grad():
            assert torch.allclose(fast.logits(batch), plain.logits(plain_batch), rtol=1e-4, atol=1e-3)


def _val_paths(root: Path) -> list[Path]:
    frame = pd.read_csv(root / "mini" / "val.csv", dtype=str)
    return [root / "mini" / "val" / name for name in frame["filename"]]


PREDICTED_AS_TRAINED = {
    **{distance: {"model.distance": distance} for distance in ("euclidean", "cosine", "relation", "transformed")},
    "mlp-head": {"model.head": "mlp"},
    "hallucination": {"method": "hallucination"},
    "afhn": {"method": "afhn", "afhn.pretrain_epochs": 0},
    # an epoch of the encoder alone, then one with G and D: best.pt, whichever it is, predicts as it was scored
    "afhn-pretrained-encoder": {"method": "afhn", "afhn.pretrain_epochs": 1, "train.epochs": 2},
}


@pytest.mark.parametrize("variant", PREDICTED_AS_TRAINED)
def test_predict_on_best_pt_writes_exactly_the_runs_predictions(
    tiny_builtin: Path, tmp_path: Path, variant: str
) -> None:
    overrides = tiny_overrides(tiny_builtin, **{"train.epochs": 1, **PREDICTED_AS_TRAINED[variant]})
    config = load_config(ExperimentConfig, None, overrides)
    result = run(config, tmp_path / "run")
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    out, mini = tmp_path / "pred.csv", tiny_builtin / "mini"  # the run was scored on the test split's episodes
    predict = load_job("predict").predict_testcase
    prediction = predict(tmp_path / "run" / "best.pt", mini / "test.csv", mini / "test", data.report.path, out, "cpu")
    assert out.read_text().splitlines()[0].split(",") == ["episode_id"] + [f"query{i}" for i in range(50)]
    ids, values = read_predictions(out)
    assert (
        ids == data.report.testcase.episode_ids and values.shape == (20, 50) and set(np.unique(values)) <= set(range(5))
    )
    assert out.read_bytes() == (tmp_path / "run" / "predictions.csv").read_bytes()
    assert prediction.score is not None and result.score is not None and prediction.score.mean == result.score.mean


@pytest.mark.parametrize("variant", PREDICTED_AS_TRAINED)
def test_evaluate_encodes_each_image_once_and_predicts_as_episode_by_episode(tiny_builtin: Path, variant: str) -> None:
    overrides = tiny_overrides(tiny_builtin, **{"data.n_val_episodes": 40, **PREDICTED_AS_TRAINED[variant]})
    config = load_config(ExperimentConfig, None, overrides)
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    torch.manual_seed(0)
    method = build_method(config)
    bank, episodes = data.select.bank, data.select.episodes
    encoded = []
    encode = method.encode
    method.encode = lambda images: encoded.append(len(images)) or encode(images)  # type: ignore[method-assign]
    result = evaluate(method, bank, episodes)
    used = {int(row) for e in episodes for row in (*e.support, *e.query)}
    assert sum(encoded) == len(used) < sum(len(e.support) + len(e.query) for e in episodes)
    method.encode = encode  # type: ignore[method-assign]
    method.eval()
    with torch.inference_mode():
        one_by_one = [method.logits(episode_tensors(e, bank, BatchTransform())).argmax(1).numpy() for e in episodes]
    assert np.array_equal(result.predictions, np.stack(one_by_one))
    correct = [float((p == e.query_labels.numpy()).mean()) for p, e in zip(one_by_one, episodes, strict=True)]
    assert result.score is not None and result.score.mean == pytest.approx(100 * np.mean(correct))


def test_evaluate_without_answers_predicts_but_does_not_score(tiny_builtin: Path) -> None:
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin))
    data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    episodes = data.report.episodes
    unlabelled = [type(e)(e.spec, e.support, e.query, torch.full_like(e.query_labels, -1)) for e in episodes]
    result = evaluate(build_method(config), data.report.bank, unlabelled[:4])
    assert result.score is None and result.predictions.shape == (4, 50)


def test_jobs_report_user_errors_in_one_line(tiny_builtin: Path, tmp_path: Path) -> None:
    train = run_script("train.py", "train.optim.lrr=1", f"data.root={tiny_builtin}")
    assert train.returncode == 2
    assert train.stderr.strip() == "error: unknown key 'train.optim.lrr' (did you mean 'lr'?)"
    # A data mistake is found before the run folder is made: nothing half-written is left behind.
    out = tmp_path / "run"
    bad_data = run_script("train.py", f"data.root={tiny_builtin}", "train_episode.way=50", f"output_dir={out}")
    assert bad_data.returncode == 2 and "need 50 classes" in bad_data.stderr.strip().splitlines()[-1]
    assert not out.exists()
    predict = run_script("predict.py", "a.csv", "imgs", "t.csv", "o.csv", "--checkpoint", str(tmp_path / "x.pt"))
    assert predict.returncode == 2 and "Traceback" not in predict.stderr
    assert predict.stderr.strip() == f"error: checkpoint {tmp_path / 'x.pt'} does not exist"


def test_mean_colour_baseline_reads_colour_and_only_colour(course_data, tiny_builtin: Path) -> None:
    from fewshot.config.schema import DataConfig, EpisodeSpec
    from fewshot.evaluation import mean_colour_baseline

    spec = EpisodeSpec(way=5, shot=1, query=5)
    # course_data gives every class its own brightness: colour alone separates them.
    coloured = load_fewshot_data(DataConfig(root=course_data(per_class=6), n_val_episodes=20), spec, spec)
    assert mean_colour_baseline(coloured.report.bank, coloured.report.episodes).mean > 90
    # The built-in data hides the class from colour: near chance (20%).
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, **{"data.n_val_episodes": 200}))
    builtin = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
    assert mean_colour_baseline(builtin.report.bank, builtin.report.episodes).mean < 32


def test_prepare_data_job_checks_decodes_and_summarises(tiny_builtin: Path) -> None:
    args = [f"data.root={tiny_builtin}", "data.image_size=32", "eval.query=10", "data.n_val_episodes=20"]
    done = run_script("prepare_data.py", *args, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "160 images, 8 classes (20-20 per class)" in done.stdout
    assert "20 × 5-way 1-shot 10-query" in done.stdout
    bad = run_script("prepare_data.py", f"data.root={tiny_builtin}", "train.way=50", timeout=300)
    assert bad.returncode == 2
    train_csv = tiny_builtin / "mini" / "train.csv"
    assert bad.stderr.strip() == (
        f"error: {train_csv} (train split): 50-way 1-shot 15-query episodes need 50 classes, but the data has only 8"
    )


def test_tsne_job_draws_from_a_hallucination_checkpoint_and_refuses_a_protonet_one(
    tiny_builtin: Path, tmp_path: Path
) -> None:
    config = load_config(ExperimentConfig, None, tiny_overrides(tiny_builtin, **{"train.epochs": 1}))
    run(config, tmp_path / "protonet")
    overrides = tiny_overrides(tiny_builtin, method="hallucination", output_dir=tmp_path / "hallucination")
    trained = run_script("train.py", *overrides, "train.epochs=1")
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "hallucination" / "tsne.png").is_file()  # the training job draws one for every such run
    assert not (tmp_path / "protonet" / "tsne.png").exists()  # a run itself draws nothing: its caller decides
    out = tmp_path / "again.png"
    drawn = run_script(
        "tsne.py",
        "--checkpoint",
        str(tmp_path / "hallucination" / "best.pt"),
        "--out",
        str(out),
        "--classes",
        "3",
        "--per-class",
        "6",
        "--fakes",
        "5",
    )
    assert drawn.returncode == 0, drawn.stderr
    assert out.is_file()
    refused = run_script("tsne.py", "--checkpoint", str(tmp_path / "protonet" / "best.pt"))
    assert refused.returncode == 2 and "holds a protonet model" in refused.stderr and "Traceback" not in refused.stderr


def test_the_testcase_decides_the_episode_shape_of_a_prediction(tiny_builtin: Path, tmp_path: Path) -> None:
    """A checkpoint trained for 5-shot evaluation predicts the course's 1-shot testcase as 1-shot: 75 queries."""
    from fewshot.checkpoint import save_checkpoint
    from fewshot.config.loading import config_dict
    from fewshot.errors import DataError

    config = load_config(ExperimentConfig, None, [*tiny_overrides(tiny_builtin), "eval_episode.shot=5"])
    save_checkpoint(tmp_path / "best.pt", {"epoch": 1, "model": build_method(config).state_dict(),
                                           "config": config_dict(config)})  # fmt: skip
    val = tiny_builtin / "mini"
    # the course's 5-way 1-shot 15-query file, without its answers (its first 60 episodes: the shape is the point)
    testcase = tmp_path / "test_testcase.csv"
    _first_episodes(val / "val_testcase.csv", testcase, 60)
    predict = load_job("predict").predict_testcase
    result = predict(tmp_path / "best.pt", val / "val.csv", val / "val", testcase, tmp_path / "p.csv", "cpu")
    assert result.predictions.shape == (60, 75) and result.score is None
    _first_episodes(val / "val_testcase_gt.csv", tmp_path / "test_testcase_gt.csv", 60)  # with them: scored as 1-shot
    assert predict(tmp_path / "best.pt", val / "val.csv", val / "val", testcase, tmp_path / "p.csv", "cpu").score
    unnamed = tmp_path / "unnamed.csv"  # a header that names nothing: the user says the shape
    lines = testcase.read_text().splitlines()
    unnamed.write_text("\n".join([",".join(f"c{i}" for i in range(81)), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="pass --way and --shot"):
        predict(tmp_path / "best.pt", val / "val.csv", val / "val", unnamed, tmp_path / "p.csv", "cpu")
    given = predict(tmp_path / "best.pt", val / "val.csv", val / "val", unnamed, tmp_path / "p.csv", "cpu", (5, 1))
    assert given.predictions.shape == (60, 75)


def _first_episodes(source: Path, target: Path, episodes: int) -> None:
    """``target``: the header and first ``episodes`` rows of the episode (or answer) file ``source``."""
    target.write_text("".join(source.read_text().splitlines(keepends=True)[: episodes + 1]))


def _noise_bank(classes: int, per_class: int, colour_is_class: bool) -> ImageBank:
    """Random 8-pixel images, class-major; with ``colour_is_class`` each class is also brighter than the last."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randint(0, 100, (len(labels), 3, 8, 8), generator=generator, dtype=torch.uint8)
    if colour_is_class:
        images += (30 * labels).to(torch.uint8)[:, None, None, None]
    names = tuple(f"c{c}" for c in range(classes))
    return ImageBank(images, labels, names, tuple(str(i) for i in range(len(labels))))


def test_the_linear_probe_learns_what_features_carry_and_scores_only_images_it_did_not_fit() -> None:
    mean_colour = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    separable = linear_probe(mean_colour, _noise_bank(4, 10, colour_is_class=True))
    assert separable is not None and separable.mean > 90 and len(separable.per_episode) == 4 * 5  # every other image
    # Every image's own pixels, and no class in them: a probe that scored an image it was fit on would recall its
    # label from its unique features; on held-out images it can only guess.
    memorised = linear_probe(torch.nn.Flatten(), _noise_bank(4, 40, colour_is_class=False))
    assert memorised is not None and memorised.mean < 40  # chance: 25 %, ± about 13 % over 80 images
    # a class with one image leaves it nothing to score
    assert linear_probe(mean_colour, _noise_bank(3, 1, colour_is_class=True)) is None
