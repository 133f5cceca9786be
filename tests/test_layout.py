"""The rooms of the code base keep to their jobs: imports only go down, one TFLite module, one
module that spells the run directory's file names.

Read from the source with ``ast`` (nothing is imported), so the checks are the code's own words.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.model_checks import REPO_ROOT

# A room may import the rooms before it in this order, never those after it. configs/ is a leaf
# anyone may import.
ROOMS = ("layers", "architectures", "configs", "compression", "deploy", "trainer", "bench")
ENTRY_POINTS = ("train", "evaluate", "export", "benchmark")
# The one TFLite module, and the one module that spells the run directory layout.
TFLITE_MODULE = "deploy/tflite.py"
WORKDIR_MODULE = "deploy/workdir.py"
WORKDIR_FILES = {
    "config.json",
    "classes.json",
    "LIGHTNETS_RUN",
    "architecture.keras",
    "channel_pruning.json",
    "best.json",
    "metrics.csv",
    "metrics.json",
    "curves.png",
    "model.keras",
    "model.tflite",
    "model_float16.tflite",
    "model_dynamic_range.tflite",
    "model_int8.tflite",
}
WORKDIR_DIRS = {"checkpoints", "best", "export", "logs", "plots"}


def library_files() -> list[Path]:
    files = [p for room in ROOMS for p in sorted((REPO_ROOT / room).rglob("*.py"))]
    assert len(files) > 40
    return files


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def imported_modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


@pytest.mark.parametrize("path", library_files(), ids=rel)
def test_imports_only_go_down_and_never_reach_an_entry_point(path):
    room = rel(path).split("/")[0]
    allowed = set(ROOMS[: ROOMS.index(room) + 1]) | {"configs"}
    tree = ast.parse(path.read_text(), filename=str(path))
    for line, module in imported_modules(tree):
        top = module.split(".")[0]
        assert top not in ENTRY_POINTS, f"{rel(path)}:{line} imports the entry point {module}"
        if top in ROOMS:
            assert top in allowed, f"{rel(path)}:{line}: {room}/ imports {module} (a room below)"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_only_the_tflite_module_converts_or_interprets_tflite():
    offenders = []
    for path in [*library_files(), *(REPO_ROOT / f"{e}.py" for e in ENTRY_POINTS)]:
        if rel(path) == TFLITE_MODULE:
            continue
        source = path.read_text()
        for needle in ("TFLiteConverter", "ai_edge_litert", "tf.lite.Interpreter"):
            if needle in source:
                offenders.append(f"{rel(path)}: {needle}")
    assert not offenders, offenders
    tflite_source = (REPO_ROOT / TFLITE_MODULE).read_text()
    assert "TFLiteConverter" in tflite_source and "ai_edge_litert" in tflite_source


def test_only_the_workdir_module_spells_the_run_directory_names():
    offenders = []
    for path in [*library_files(), *(REPO_ROOT / f"{e}.py" for e in ENTRY_POINTS)]:
        if rel(path) == WORKDIR_MODULE:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in WORKDIR_FILES:
                offenders.append(f"{rel(path)}:{node.lineno}: {node.value!r}")
        for call in _calls(tree):
            if _name(call.func) in ("os.path.join", "Path"):
                for arg in call.args:
                    if isinstance(arg, ast.Constant) and arg.value in WORKDIR_DIRS:
                        offenders.append(f"{rel(path)}:{call.lineno}: join(..., {arg.value!r})")
    assert not offenders, offenders
