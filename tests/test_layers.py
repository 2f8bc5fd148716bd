"""The package's layers point one way, read from the modules' own imports so the order stays true: a module
imports from its own package or a lower layer only. Ray lives in ``orchestration`` alone, MLflow in ``tracking``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fewshot"
LAYERS = [  # lowest first
    {"errors"},
    {"atomic", "paths"},
    {"runtime", "precision", "checkpoint"},
    *({unit} for unit in ("config", "data", "models", "methods", "evaluation", "training", "viz", "search")),
    *({unit} for unit in ("tracking", "orchestration", "cli")),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
ONLY_IN = {"ray": "orchestration", "mlflow": "tracking"}
MODULES = sorted(PACKAGE.rglob("*.py"))


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _violations(path: Path, unit: str) -> list[str]:
    """What is wrong with the imports of ``path`` (at any depth, inside functions too), a module of ``unit``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    found = []
    for name in sorted(names):
        top, *rest = name.split(".")
        if top in ONLY_IN and unit != ONLY_IN[top]:
            found.append(f"fewshot.{unit} ({path.name}) imports {name}: only fewshot.{ONLY_IN[top]} may")
        if top == "fewshot" and rest and unit != "__init__" and rest[0] != unit and RANK[rest[0]] >= RANK[unit]:
            found.append(f"fewshot.{unit} ({path.name}) imports {name}, which is not below it")
    return found


def test_every_unit_has_a_layer() -> None:
    assert {_unit(path) for path in MODULES} - {"__init__"} == set(RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_frameworks_stay_in_their_package(path: Path) -> None:
    assert _violations(path, _unit(path)) == []


def test_the_check_sees_an_upward_import_at_any_depth_and_a_framework_out_of_place(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import ray\n\ndef f():\n    from fewshot.training.run import run\n")
    assert _violations(module, "evaluation") == [
        "fewshot.evaluation (m.py) imports fewshot.training.run, which is not below it",
        "fewshot.evaluation (m.py) imports ray: only fewshot.orchestration may",
    ]
    assert _violations(module, "orchestration") == []
