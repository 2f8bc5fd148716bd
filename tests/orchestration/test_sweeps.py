"""The sweep jobs build the configurations they promise (no Ray needed)."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from fewshot.cli import sweep_config, sweep_parser
from tests.conftest import load_job as _job


def _args(*argv: str):
    return sweep_parser("test").parse_intermixed_args(list(argv))


def test_flags_override_quick_defaults_and_overrides_win() -> None:
    config = sweep_config(
        _args("--epochs", "7", "--train-way", "30", "train.episodes_per_epoch=11", "--data-root", "/d")
    )
    assert config.train.epochs == 7 and config.train_episode.way == 30
    assert config.train.episodes_per_epoch == 11 and str(config.data.root) == "/d"
    assert sweep_config(_args()).train.epochs == 5  # quick default


def test_distance_sweep_varies_only_the_distance() -> None:
    sweep = _job("sweep_distance").make_sweep(sweep_config(_args()))
    assert [v.tags["distance"] for v in sweep.variants] == ["euclidean", "cosine", "relation", "transformed"]
    assert [v.config.model.distance for v in sweep.variants] == ["euclidean", "cosine", "relation", "transformed"]
    assert len({v.config.model_copy(update={"model": None}) for v in sweep.variants}) == 1
    assert sweep.group_by == "distance" and sweep.study == "distance"


def test_shot_sweep_trains_and_tests_with_the_same_shot() -> None:
    sweep = _job("sweep_shots").make_sweep(sweep_config(_args("--train-way", "20")))
    assert [(v.config.train_episode.shot, v.config.eval_episode.shot) for v in sweep.variants] == [
        (1, 1),
        (5, 5),
        (10, 10),
    ]
    assert all(v.config.train_episode.way == 20 and v.config.eval_episode.way == 5 for v in sweep.variants)
    assert [v.tags["shot"] for v in sweep.variants] == ["1", "5", "10"]


def test_seeds_multiply_variants_with_distinct_seeds() -> None:
    sweep = _job("sweep_distance").make_sweep(sweep_config(_args()))
    runs = replace(sweep, variants=sweep.variants[:2]).seeded(3).variants
    assert [(r.name, r.config.seed) for r in runs[:3]] == [
        ("euclidean/seed0", 0),
        ("euclidean/seed1", 1),
        ("euclidean/seed2", 2),
    ]
    assert len(runs) == 6


def test_hallucination_sweeps_vary_m_and_the_method() -> None:
    job = _job("sweep_hallucination")
    base = sweep_config(_args("--train-way", "30"))
    m_sweep = job.m_sweep(base)
    assert [(v.config.method, v.config.hallucination.m, v.tags["m"]) for v in m_sweep.variants] == [
        ("hallucination", 10, "10"),
        ("hallucination", 50, "50"),
        ("hallucination", 100, "100"),
    ]
    assert all(v.config.train_episode.way == 30 and v.config.eval_episode.way == 5 for v in m_sweep.variants)
    methods = job.method_sweep(base)
    assert [v.config.method for v in methods.variants] == ["protonet", "hallucination", "afhn", "afhn"]
    assert [v.tags["method"] for v in methods.variants] == ["protonet", "hallucination", "afhn", "afhn-report"]
    paper, report = methods.variants[2].config.afhn, methods.variants[3].config.afhn
    assert (paper.gan, paper.anti_collapse, report.gan, report.anti_collapse) == ("wgan-gp", "paper", "bce", "ratio")
    assert report.classification_warmup > 0 and report.pretrain_epochs == 0
    assert (m_sweep.study, m_sweep.group_by, methods.study, methods.group_by) == (
        "hallucination-m",
        "m",
        "methods",
        "method",
    )


def test_the_last_epoch_is_reported_to_ray_only_after_the_final_evaluation(tmp_path: Path, monkeypatch) -> None:
    from fewshot.data.predictions import Score
    from fewshot.orchestration import train as train_module
    from fewshot.training.loop import FitResult
    from fewshot.training.recipe import Outcome, RunResult

    sent = []
    monkeypatch.setattr(train_module.ray.train, "report", lambda metrics, checkpoint=None: sent.append(metrics))
    reporter = train_module.RayReporter(last_epoch=3)
    for epoch in (1, 2, 3):
        reporter.report(epoch, {"val_acc": 40.0 + epoch}, None)
    assert [m["epoch"] for m in sent] == [1, 2]  # epoch 3 waits: ASHA stops a trial on its max_t report
    fit = FitResult(43.0, 3, [], tmp_path / "best.pt", tmp_path / "last.pt")
    reporter.report_last(RunResult(fit, Outcome(Score(44.5, 0.8, np.ones(600)), tmp_path / "predictions.csv")))
    assert sent[-1] == {"epoch": 3, "val_acc": 43.0, "report_acc": 44.5}


def test_sizing_flags_reach_the_scheduler() -> None:
    import pytest

    from fewshot.cli import sizing
    from fewshot.errors import FewshotError
    from fewshot.orchestration.sweep import Sizing

    args = _args("--workers", "2", "--max-concurrent", "3", "--gpus-per-run", "0.5", "--cpus-per-run", "4")
    assert sizing(args) == Sizing(workers=2, gpus_per_run=0.5, cpus_per_run=4, max_concurrent=3)
    assert sizing(_args()) == Sizing()
    with pytest.raises(FewshotError, match="--max-concurrent 0"):
        sizing(_args("--max-concurrent", "0"))
    assert _args("--resume").resume and not _args().resume


def test_submit_passes_the_commit_and_user_to_the_job(monkeypatch, tmp_path: Path) -> None:
    import json

    from fewshot.tracking.runs import source_tags

    submit = _job("submit").submit_command
    given = json.dumps({"env_vars": {"FEWSHOT_CACHE": "/c"}, "pip": ["x"]})
    command = submit(["--address", "http://h:8265", "--runtime-env-json", given, "--", "python", "jobs/t.py"],
                     "abc1234def", "ana")  # fmt: skip
    assert command[1:5] == ["job", "submit", "--working-dir", str(Path(__file__).resolve().parents[2])]
    env = json.loads(command[command.index("--runtime-env-json") + 1])
    assert env == {"env_vars": {"FEWSHOT_CACHE": "/c", "FEWSHOT_GIT_COMMIT": "abc1234def", "FEWSHOT_USER": "ana"},
                   "pip": ["x"]}  # fmt: skip
    assert command[-3:] == ["--", "python", "jobs/t.py"] and command.count("--runtime-env-json") == 1
    # In the job, the runs take them from there (its copy of the code has no .git to ask).
    monkeypatch.setenv("FEWSHOT_GIT_COMMIT", "abc1234def")
    monkeypatch.setenv("FEWSHOT_USER", "ana")
    source_tags.cache_clear()
    try:
        tags = source_tags()
    finally:
        source_tags.cache_clear()
    assert tags["mlflow.source.git.commit"] == "abc1234def" and tags["git_sha"] == "abc1234"
    assert tags["mlflow.user"] == "ana" and tags["mlflow.source.type"] == "JOB"
