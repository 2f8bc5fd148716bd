import statistics
from pathlib import Path

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
        with tracker.run("distance", f"{distance}-{seed}", parent, {"distance": distance, "seed": seed}) as run:
            tracker.log_metrics(run, {"val_acc": acc, "val_ci95": ci}, step=3)
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
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {f.path for f in MlflowClient(tracker.uri).list_artifacts(parent)}
    assert logged == {"comparison-distance.csv", "comparison-distance.md", "comparison-distance.png"}
