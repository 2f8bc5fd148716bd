"""The course reports as one document, built from the MLflow store alone: every table of a reproduce plan, its
figures, the protocol each table was scored under and the MLflow run of every cell.

A plan (``plan.json``, logged on the report's MLflow run) names each table's rows and, for each row, the config
hashes of its runs (one per seed); the runs are found by their ``config_hash`` tag. Rebuilding from the plan
alone (``jobs/report.py --report``) gives the same report as the job that trained them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from fewshot.atomic import fresh_folder, write_text_atomic
from fewshot.errors import FewshotError
from fewshot.tracking.runs import RunRecord, Tracker
from fewshot.tracking.tables import PROBE_COLUMNS, compare, run_scores, runs_frame
from fewshot.viz.plots import comparison_bars, save_figure

CONFIG_HASH_TAG = "config_hash"  # on every run of a reproduce plan: the hash of its resolved config
PLAN_FILE = "plan.json"
REPORT_EXPERIMENT = "report"  # the MLflow experiment of the reports' own runs
REPORT_FILE = "report.md"

# What the course reports measured (shared EXPERIMENTS), beside ours: real mini-ImageNet at 84 px, their own
# schedules (30 epochs × 2000 episodes and longer), Office-Home at 128 px. Not the same data or budget as a
# quick run on the built-in data: a column to read beside ours, never a difference to take.
REFERENCE: dict[str, tuple[str, dict[str, float]]] = {
    "distance": (
        "report B, 5-way 1-shot training; its parametric distance is our transformed",
        {"euclidean": 37.43, "cosine": 39.15, "transformed": 39.74},
    ),
    "shots": ("report B, 5-way K-shot training, Euclidean", {"1": 37.43, "5": 58.55, "10": 62.96}),
    "train-way": ("report B: 5-way training, and 30-way training with its MLP head", {"5": 37.43, "30": 47.64}),
    "m": ("report B, 5-way 1-shot training", {"10": 36.53, "50": 38.92, "100": 39.72}),
    "methods": (
        "report B, 30-way training with its MLP head; its AFHN is our afhn-report",
        {"protonet": 47.64, "hallucination": 49.48, "afhn-report": 50.22},
    ),
    "settings": ("report A, Office-Home validation at 128 px", {"A": 23, "B": 35, "C": 46, "D": 36, "E": 44}),
}


def finished_run(tracker: Tracker, experiment: str, key: str) -> RunRecord | None:
    """The finished run of the config with hash ``key`` in ``experiment``, if there is one."""
    return next((run for run in tracker.find(experiment, CONFIG_HASH_TAG, key) if run.status == "FINISHED"), None)


def build_report(tracker: Tracker, plan: Mapping[str, Any], out: Path) -> Path:
    """Write ``report.md``, its tables (CSV) and figures into the new folder ``out`` (all at once: a folder
    with a report in it is a whole one) from the runs ``plan`` names; returns the report's path."""
    out = fresh_folder(out)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out.parent) as scratch:
        work = Path(scratch) / "report"
        (work / "figures").mkdir(parents=True)
        sections = [_section(tracker, plan["experiment"], table, work) for table in plan["tables"]]
        if plan.get("tsne"):
            sections.append(_tsne_section(tracker, plan["experiment"], plan["tsne"], work))
        write_text_atomic(work / PLAN_FILE, json.dumps(plan, indent=2) + "\n")
        write_text_atomic(work / REPORT_FILE, _header(plan) + "\n\n".join(sections) + "\n")
        os.replace(work, out)  # fresh_folder reserved the name with an empty folder: rename(2) replaces it whole
    return out / REPORT_FILE


def _header(plan: Mapping[str, Any]) -> str:
    made = plan.get("produced", {})
    lines = [
        f"# fewshot report: profile `{plan['profile']}`",
        "",
        f"- command: `{made.get('command', 'not recorded')}`",
        f"- finished: {made.get('finished', 'not recorded')}; machine: {made.get('machine', 'not recorded')}",
        f"- git commit: `{made.get('commit', 'not recorded')}`; MLflow experiment of the runs: `{plan['experiment']}`",
        "- every accuracy is mean ± 95% CI over the reported episodes (± std over seeds when a row has several"
        " runs); the model of each run was chosen on other episodes or images than those it is reported on"
        " (each table names its protocol). Reference: the course reports' own figures, on their data and"
        " schedules, to read beside ours.",
        "",
        "",
    ]
    return "\n".join(lines)


def _runs_frame(tracker: Tracker, experiment: str, table: Mapping[str, Any]) -> pd.DataFrame:
    """The finished runs of ``table``'s rows, each with its row's value as the ``by`` column."""
    found = [
        (row["value"], run)
        for row in table["rows"]
        for run in (finished_run(tracker, experiment, key) for key in row["keys"])
        if run is not None
    ]
    frame = runs_frame(run for _, run in found)
    frame[table["by"]] = [value for value, _ in found]  # the plan's value (typed), not the tag's text
    return frame


def _section(tracker: Tracker, experiment: str, spec: Mapping[str, Any], work: Path) -> str:
    """One table: markdown with its protocol and figures; its CSV and figures written into ``work``."""
    study, by, title = spec["study"], spec["by"], spec["title"]
    runs = _runs_frame(tracker, experiment, spec)
    missing = [row["value"] for row in spec["rows"] if runs.empty or row["value"] not in set(runs[by])]
    with tempfile.TemporaryDirectory(prefix="fewshot-scores-") as folder:
        table = compare(runs, by, spec.get("describe", ()), run_scores(tracker, Path(folder)))
    if table.empty:
        return f"## {title}\n\nNo run of this table has finished: {', '.join(map(str, missing))}."
    note, reference = REFERENCE.get(study, ("", {}))
    table["reference"] = [reference.get(str(value)) for value in table[by]]
    table["mlflow_runs"] = [" ".join(runs.loc[runs[by] == value, "run_id"]) for value in table[by]]
    if spec.get("chance") is not None:  # drawn as a line on the bars
        table["chance"] = spec["chance"]
    table.to_csv(work / f"{study}.csv", index=False)
    bars = comparison_bars(table, by, title, work / "figures" / f"{study}.png")
    curves = _curves(tracker, runs, by, title, work / "figures" / f"{study}-curves.png")
    shown = pd.DataFrame(
        {
            by: table[by],
            **{tag: table[tag] for tag in spec.get("describe", ())},
            "accuracy (%)": table["accuracy"],
            **({f"vs {table[by].iloc[0]}, paired": table["paired"]} if "paired" in table else {}),
            **{name: table[column] for column, name in PROBE_COLUMNS.items() if column in table},
            "course report": [f"{r:.2f}" if r is not None and r == r else "" for r in table["reference"]],
            "MLflow run(s)": [" ".join(f"`{i}`" for i in ids.split()) for ids in table["mlflow_runs"]],
        }
    )
    lines = [f"## {title}", "", shown.to_markdown(index=False), ""]
    lines += [f"- {protocol}" for protocol in dict.fromkeys(table["protocol"])]
    if note:
        lines.append(f"- course report column: {note}")
    if missing:
        lines.append(f"- not finished, left out: {', '.join(map(str, missing))}")
    lines += ["", f"![{title}](figures/{bars.name})"]
    if curves is not None:
        lines.append(f"![validation accuracy by epoch](figures/{curves.name})")
    return "\n".join(lines)


def _curves(tracker: Tracker, runs: pd.DataFrame, by: str, title: str, path: Path) -> Path | None:
    """Each run's validation accuracy by epoch (the curve its checkpoint was chosen on), one line per run."""
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    drawn = False
    for value, run_id in zip(runs[by], runs["run_id"], strict=True):
        history = tracker.history(run_id, "val_acc")
        if history:
            steps, values = zip(*history, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=str(value))
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("selection accuracy (%)")
    ax.set_title(f"{title}: validation by epoch", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _tsne_section(tracker: Tracker, experiment: str, keys: Sequence[str], work: Path) -> str:
    """The t-SNE figures the hallucinating methods' runs drew: real (×) and hallucinated (▲) features."""
    lines = ["## t-SNE of real and hallucinated features", ""]
    with tempfile.TemporaryDirectory(prefix="fewshot-tsne-") as folder:
        for key in keys:
            run = finished_run(tracker, experiment, key)
            path = tracker.artifact(run.run_id, "tsne.png", Path(folder) / key) if run is not None else None
            if run is None or path is None:
                lines.append(f"- config `{key}`: no finished run with a t-SNE figure")
                continue
            name = f"tsne-{run.tags.get('method', key)}.png"
            shutil.copyfile(path, work / "figures" / name)
            method = run.tags.get("method", run.name)
            lines += [f"{method} (MLflow run `{run.run_id}`):", "", f"![t-SNE of {method}](figures/{name})", ""]
    return "\n".join(lines)


def read_plan(tracker: Tracker, run_id: str, folder: Path) -> dict[str, Any]:
    """The plan a report run holds."""
    path = tracker.artifact(run_id, PLAN_FILE, folder)
    if path is None:
        raise FewshotError(f"run {run_id} has no {PLAN_FILE}: not a report of jobs/reproduce.py")
    return json.loads(path.read_text())
