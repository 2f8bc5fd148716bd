"""``jobs/reproduce.py``: the plan of a profile (each distinct config once, fine-tunings after their
pre-training), its mistakes in one line, and the whole job on a real Ray head and a real MLflow store: killed
mid-way, run again, nothing trained twice, the report built and rebuilt from the store alone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fewshot.errors import ConfigError
from fewshot.orchestration.reproduce import dry_run, load_profile, make_plan, run_dir
from fewshot.orchestration.sweep import Sizing
from fewshot.tracking.report import CONFIG_HASH_TAG, REPORT_EXPERIMENT
from fewshot.tracking.runs import RunRecord, Tracker
from tests.conftest import REPO, RayHead, job_env, run_script


def _rows(plan, study: str) -> dict[str, list[str]]:
    (table,) = [t for t in plan.tables if t["study"] == study]
    return {str(row["value"]): row["keys"] for row in table["rows"]}


def test_a_run_two_studies_share_is_planned_once(tmp_path: Path) -> None:
    name, profile = load_profile("quick")
    plan = make_plan(name, profile, tmp_path)
    distance, shots, ways = _rows(plan, "distance"), _rows(plan, "shots"), _rows(plan, "train-way")
    m, methods = _rows(plan, "m"), _rows(plan, "methods")
    euclidean = distance["euclidean"]
    assert shots["1"] == ways["5"] == methods["protonet"] == euclidean  # 5-way 1-shot Euclidean ProtoNet: one run
    assert m["10"] == methods["hallucination"]  # M=10 is the method comparison's hallucination
    assert len(plan.runs) == 20 and len({k for t in plan.tables for r in t["rows"] for k in r["keys"]}) == 20
    assert set(plan.tsne) == {methods["hallucination"][0], methods["afhn"][0]}
    settings = _rows(plan, "settings")
    a, b, c = (plan.runs[settings[s][0]] for s in "ABC")
    assert a.needs == () and a.config.backbone is None
    (supervised,) = b.needs
    assert b.config.backbone == run_dir(tmp_path, plan, supervised) / "backbone.pt"
    assert plan.runs[supervised].config.method == "supervised" and plan.runs[c.needs[0]].config.method == "byol"
    assert plan.runs[settings["D"][0]].needs == b.needs and plan.runs[settings["D"][0]].config.freeze
    # The CPU setting: the pre-trainings build the fine-tunings' ResNet-18, and their probes make a table.
    assert {plan.runs[key].config.arch for key in (supervised, c.needs[0], settings["A"][0])} == {"resnet18"}
    # a pre-training's own overrides apply to it alone, after the shared ones
    assert (plan.runs[supervised].config.train.epochs, plan.runs[c.needs[0]].config.train.epochs) == (12, 6)
    assert _rows(plan, "probes") == {"supervised": [supervised], "BYOL (no labels)": list(c.needs)}


def test_seeds_and_only_choose_the_runs(tmp_path: Path) -> None:
    name, profile = load_profile("quick")
    seeded = make_plan(name, profile, tmp_path, seeds=2)
    assert all(len(keys) == 2 for keys in _rows(seeded, "distance").values())
    assert len(seeded.runs) == 2 + 2 * 18  # the two pre-trainings are shared by the seeds' fine-tunings
    only = make_plan(name, profile, tmp_path, only=["distance"])
    assert [t["study"] for t in only.tables] == ["distance"] and len(only.runs) == 4
    text = dry_run(only, Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path, Sizing())
    assert text.count("  new  ") == 4 and "4 to train" in text


@pytest.mark.parametrize(
    ("text", "only", "message"),
    [
        ("studies: {distanse: [euclidean]}", (), "distanse"),
        ("studies: {distance: [euclidian]}", (), "euclidian"),
        ("studies: {settings: ABX}", (), "ABX"),
        ("studies: {shots: [1, 1]}", (), "distinct positive"),
        ("studies: {distance: [cosine]}\nfewshot: [train.epochz=3]", (), "fewshot: unknown key 'train.epochz'"),
        ("studies: {distance: [cosine]}", ("distances",), "--only distances: unknown study"),
        ("studies: {}", (), "no study to run"),
        (  # a pre-training of another network than the fine-tunings could not be loaded by them
            "studies: {settings: B}\npretrain: [arch=resnet50]\nfinetune: [arch=resnet18]",
            (),
            "the supervised pre-training trains a resnet50 but fine-tuning builds a resnet18",
        ),
    ],
)
def test_profile_mistakes_are_one_line(tmp_path: Path, text: str, only: tuple[str, ...], message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        make_plan(*load_profile(str(path)), tmp_path, only)
    assert "\n" not in str(caught.value)


def test_an_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="profiles: paper, quick"):
        load_profile("quik")


TINY_PROFILE = """
studies:
  distance: [euclidean, cosine]
  shots: [1, 2]
  settings: D
fewshot: [data.image_size=32, data.n_val_episodes=20, train.epochs=2, train.episodes_per_epoch=4,
          train.val_episodes=10, train.log_every=4, train.device=cpu, eval_episode.query=10]
pretrain: [method=supervised, train.epochs=1, data.image_size=16, train.batch_size=40, data.n_val_episodes=10,
           train.val_episodes=5, eval_episode.query=5]
finetune: [train.epochs=1, data.image_size=16, train.batch_size=4]
"""


def _runs(tracker: Tracker) -> list[RunRecord]:
    experiment = tracker._client.get_experiment_by_name("reproduce-tiny")
    if experiment is None:
        return []
    return [tracker.get(run.info.run_id) for run in tracker._client.search_runs([experiment.experiment_id])]


@pytest.mark.slow
@pytest.mark.ray
def test_reproduce_killed_then_run_again_trains_nothing_twice_and_reports(
    ray_head: RayHead, tiny_builtin: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    profile, results = tmp_path / "tiny.yaml", tmp_path / "results"
    profile.write_text(TINY_PROFILE)
    args = ["--profile", str(profile), "--data-root", str(tiny_builtin), "--results", str(results)]
    env = job_env(isolated_cache, ray_head)
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen([sys.executable, "jobs/reproduce.py", *args], cwd=REPO, env=env, stderr=log)
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}")
    deadline = time.monotonic() + 600
    while not list(results.glob("reproduce/tiny/runs/*/scores.csv")) or not (
        finished := [run for run in _runs(tracker) if run.status == "FINISHED"]
    ):
        assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(1)
    driver.kill()  # a lost driver: no handler runs
    driver.wait()
    assert len(finished) < 5  # some of it was left to do

    again = run_script("reproduce.py", *args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    plan = make_plan(*load_profile(str(profile)), results, data_root=str(tiny_builtin))
    runs = _runs(tracker)
    by_key = {key: [run for run in runs if run.tags[CONFIG_HASH_TAG] == key] for key in plan.runs}
    assert all(len(found) == 1 and found[0].status == "FINISHED" for found in by_key.values())  # one run each
    assert len(runs) == len(plan.runs) == 5  # euclidean is the 1-shot row: trained once
    for earlier in finished:  # kept as they were, not trained again
        assert tracker.get(earlier.run_id).end_time == earlier.end_time
        assert f"already finished (MLflow run {earlier.run_id})" in again.stderr
    for run in runs:
        if "distance" in run.tags:  # every epoch logged once: an interrupted run went on from its checkpoint
            assert sorted(step for step, _ in tracker.history(run.run_id, "loss")) == [1, 2], run.name
    (setting,) = by_key[_rows(plan, "settings")["D"][0]]
    (pretraining,) = by_key[plan.runs[_rows(plan, "settings")["D"][0]].needs[0]]
    assert setting.start_time >= pretraining.end_time  # the fine-tuning waited for its backbone
    assert setting.params["backbone"].endswith(f"{pretraining.tags[CONFIG_HASH_TAG]}/backbone.pt")

    # the report: on disk and on a run of experiment `report`, every cell the run's own score
    (report,) = sorted(results.glob("reproduce/tiny/report-*/report.md"))[-1:]
    distance = pd.read_csv(report.parent / "distance.csv")
    for row in distance.itertuples():
        (run,) = by_key[_rows(plan, "distance")[row.distance][0]]
        assert row.mlflow_runs == run.run_id and row.acc == pytest.approx(run.metrics["report_acc"])
    assert pd.read_csv(report.parent / "shots.csv")["shot"].tolist() == [1, 2]
    text = report.read_text()
    assert "| euclidean" in text and "course report" in text and "test-split" in text and "setting" in text
    assert "figures/distance.png" in text and (report.parent / "figures" / "distance-curves.png").is_file()
    parent = tracker.latest(REPORT_EXPERIMENT, "profile", "tiny")
    assert parent is not None and parent.status == "FINISHED"
    distance_runs = [by_key[keys[0]][0] for keys in _rows(plan, "distance").values()]
    best = max(distance_runs, key=lambda run: run.metrics["select_acc"])  # chosen on selection, not report
    assert parent.tags["registered.distance"] == f"fewshot-distance/1 (run {best.run_id})"
    assert "registered.settings" not in parent.tags  # Office-Home has no split to choose a run on
    logged = {entry.path for entry in tracker._client.list_artifacts(parent.run_id)}
    assert {"report.md", "plan.json", "distance.csv", "figures"} <= logged

    # rebuilt from the store alone: the same tables; the plan says every run is done
    out = tmp_path / "rebuilt"
    rebuilt = run_script("report.py", "--report", "--profile", "tiny", "--results", str(results), "--out", str(out))
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    for study in ("distance", "shots", "settings"):
        pd.testing.assert_frame_equal(pd.read_csv(out / f"{study}.csv"), pd.read_csv(report.parent / f"{study}.csv"))
    planned = run_script("reproduce.py", *args, "--dry-run", env=env)
    assert planned.returncode == 0 and planned.stdout.count("  done  ") == 5 and "0 to train" in planned.stdout
