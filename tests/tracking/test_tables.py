import statistics
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from fewshot.tracking.runs import Tracker
from fewshot.tracking.tables import compare, gather_runs, publish


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Tracker, str]:
    """A parent with euclidean x 2 seeds, cosine x 1 seed, and one failed run that must be left out."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "sweep")
    results = [("euclidean", 0, 40.0, 1.0), ("euclidean", 1, 44.0, 1.2), ("cosine", 0, 50.0, 0.9)]
    for distance, seed, acc, ci in results:
        tags = {"distance": distance, "seed": seed, "protocol.detail": "protocol test-split: chosen on val"}
        with tracker.run("distance", f"{distance}-{seed}", parent, tags) as run:
            tracker.log_metrics(run, {"report_acc": acc, "report_ci95": ci}, step=3)
    with pytest.raises(RuntimeError), tracker.run("distance", "broken", parent, {"distance": "relation"}):
        raise RuntimeError("boom")
    tracker.finish(parent)
    return tracker, parent


def test_table_has_seed_mean_and_spread_per_configuration(sweep: tuple[Tracker, str]) -> None:
    tracker, parent = sweep
    runs = gather_runs(tracker, parent)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED", "FAILED"}
    table = compare(runs, "distance")
    assert list(table["distance"]) == ["euclidean", "cosine"]  # failed relation run left out, order kept
    euclid, cosine = table.iloc[0], table.iloc[1]
    assert euclid["acc"] == 42.0 and euclid["err"] == pytest.approx(statistics.stdev([40.0, 44.0]))
    assert euclid["error"] == "std over seeds" and euclid["runs"] == 2
    assert cosine["acc"] == 50.0 and cosine["err"] == 0.9 and cosine["error"] == "95% CI"
    assert cosine["accuracy"] == "50.00 ± 0.90"


def test_publish_writes_and_logs_csv_markdown_and_plot(sweep: tuple[Tracker, str], tmp_path: Path) -> None:
    tracker, parent = sweep
    table = compare(gather_runs(tracker, parent), "distance")
    result = publish(tracker, parent, table, "distance", "5-way 1-shot by distance", tmp_path / "out")
    markdown = result.to_markdown()
    assert "| euclidean  | 42.00 ± 2.83" in markdown and "5-way 1-shot by distance" in markdown
    assert markdown.rstrip().endswith("\n\n- protocol test-split: chosen on val")  # what made every row
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {f.path for f in MlflowClient(tracker.uri).list_artifacts(parent)}
    assert logged == {"comparison-distance.csv", "comparison-distance.md", "comparison-distance.png"}


def _scored_run(tracker: Tracker, parent: str, folder: Path, tags: dict, per_episode: list[float], ids=None) -> str:
    """A finished child run with its metrics and its per-episode ``scores.csv`` artifact."""
    from fewshot.data.predictions import mean_ci95, write_scores

    score = mean_ci95(per_episode)
    with tracker.run("distance", "-".join(map(str, tags.values())), parent, tags) as run:
        tracker.log_metrics(run, {"report_acc": score.mean, "report_ci95": score.ci95}, step=1)
        path = folder / run / "scores.csv"
        write_scores(path, ids or [f"e{i}" for i in range(len(per_episode))], score)
        tracker.log_artifact(run, path)
    return run


def test_each_row_shows_its_paired_difference_to_the_reference_row(tmp_path: Path) -> None:
    import numpy as np

    from fewshot.tracking.tables import sweep_table

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "sweep")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 200)
    _scored_run(tracker, parent, tmp_path, {"distance": "euclidean", "seed": 0}, list(base))
    _scored_run(tracker, parent, tmp_path, {"distance": "euclidean", "seed": 1}, list(base + 0.02))
    better = base + 0.01 + rng.normal(0.05, 0.02, 200)  # 5 points better than euclidean's mean, per episode
    _scored_run(tracker, parent, tmp_path, {"distance": "cosine", "seed": 0}, list(better))
    other = [f"x{i}" for i in range(200)]  # scored on other episodes: not comparable
    _scored_run(tracker, parent, tmp_path, {"distance": "relation", "seed": 0}, list(base), ids=other)
    # the same episode ids, but other episodes (a 5-shot file): its protocol line names another episode file
    shot5 = {"distance": "transformed", "seed": 0, "protocol.detail": "score on 600 test episodes (test-5w5s.csv)"}
    _scored_run(tracker, parent, tmp_path, shot5, list(better))
    table = sweep_table(tracker, parent, "distance")
    assert table["paired"].tolist()[0] == "reference" and table["paired"].tolist()[2:] == ["n/a", "n/a"]
    delta, ci = table["delta"].iloc[1], table["delta_ci95"].iloc[1]
    differences = better - (base + base + 0.02) / 2  # against the mean of euclidean's two seeds
    assert delta == pytest.approx(100 * differences.mean())
    assert ci == pytest.approx(100 * 1.96 * differences.std() / np.sqrt(200))
    assert delta - ci > 4 and ci < table["err"].iloc[1]  # far tighter than either row's own interval
    markdown = publish(tracker, parent, table, "distance", "t", tmp_path / "out").to_markdown()
    assert "vs euclidean: paired Δ ± 95% CI" in markdown and f"+{delta:.2f} ± {ci:.2f}" in markdown


def test_report_compares_any_two_runs_episode_by_episode(tmp_path: Path) -> None:
    from fewshot.errors import FewshotError
    from tests.conftest import load_job, run_script

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "sweep")
    first = _scored_run(tracker, parent, tmp_path, {"distance": "cosine"}, [1.0, 0.6, 0.8, 0.4])
    second = _scored_run(tracker, parent, tmp_path, {"distance": "euclidean"}, [0.8, 0.6, 0.6, 0.4])
    other = _scored_run(tracker, parent, tmp_path, {"distance": "relation"}, [0.8, 0.6, 0.6, 0.4], ids=list("abcd"))
    done = run_script("report.py", "--compare", first, second, "--tracking-uri", tracker.uri)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cosine" in done.stdout and "euclidean" in done.stdout
    assert "difference, paired over 4 episodes: +10.00 ± 9.80 points (95% CI)" in done.stdout  # 0.2, 0, 0.2, 0
    report = load_job("report")  # the same function in this process: a user error is a FewshotError (exit 2)
    with pytest.raises(FewshotError, match=r"they were not scored on the same episodes$"):
        report.compare_runs(tracker, first, other)
    with pytest.raises(FewshotError, match=f"run {parent} has no scores.csv artifact"):
        report.compare_runs(tracker, first, parent)
    with pytest.raises(FewshotError, match="run nope is not in sqlite"):
        report.compare_runs(tracker, "nope", first)


def test_the_best_run_is_registered_by_its_selection_score_not_its_report(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from fewshot.tracking.tables import register_best

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_run("distance", "sweep")
    ids = {}
    for name, select, report in (("a", 50.0, 60.0), ("b", 55.0, 40.0), ("c", 70.0, 90.0)):
        with tracker.run("distance", name, parent, {"distance": name}) as run:
            tracker.log_metrics(run, {"select_acc": select, "report_acc": report}, step=1)
            if name != "c":  # c logged no model (a run kind without one): it cannot be registered
                tracker.log_model(run, torch.nn.Linear(2, 2), np.zeros((1, 2), np.float32))
        ids[name] = run
    assert register_best(tracker, parent, "distance") == ("fewshot-distance", 1)
    tags = tracker.get(parent).tags
    assert tags["registered_model"] == "fewshot-distance/1" and tags["best_run_id"] == ids["b"]  # not "a"
    assert MlflowClient(tracker.uri).get_model_version("fewshot-distance", "1").run_id == ids["b"]


def test_probe_columns_come_only_with_the_rows_that_carry_them() -> None:
    finished = {"status": "FINISHED", "report_ci95": 1.0}
    runs = pd.DataFrame(
        [
            {**finished, "run_id": "a", "setting": "A", "report_acc": 30.0},
            {**finished, "run_id": "b", "setting": "B", "report_acc": 50.0},
            # a pre-training under the same parent: no setting, but its probes
            {**finished, "run_id": "p", "method": "byol", "report_acc": 21.0, "linear_probe_acc": 16.0},
        ]
    ).assign(linear_probe_ci95=lambda frame: frame["linear_probe_acc"] / 10)
    assert "linear" not in compare(runs, "setting")
    probes = compare(runs, "method")
    assert probes["linear"].tolist() == ["16.00 ± 1.60"]
