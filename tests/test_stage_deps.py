"""Each stage of dvc.yaml depends on exactly the ganlab modules its script imports (directly or through the
library), so editing the report reruns only the report and editing nothing reruns nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from helpers import REPO

SRC = REPO / "src"


def _imports(path: Path) -> set[str]:
    """Every ganlab module `path` imports, at the top or inside a function (those run too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ganlab"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ganlab":
            found.add(node.module)
            for a in node.names:  # `from ganlab.data import celeba` imports the module ganlab.data.celeba
                if _module_file(f"{node.module}.{a.name}") is not None:
                    found.add(f"{node.module}.{a.name}")
    return found


def _module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def module_closure(script: Path) -> set[str]:
    """The source files (relative to the repository) of every ganlab module the script loads: the imported
    modules, their parent packages' __init__, and so on transitively."""
    todo, files = [script], set()
    while todo:
        for module in _imports(todo.pop()):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
                f = _module_file(".".join(parts[:i]))
                if f is not None and f not in files:
                    files.add(f)
                    todo.append(f)
    return {str(f.relative_to(REPO)) for f in files}


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_body(stage: dict) -> dict:
    return stage.get("do", stage)


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_its_imports(name):
    stage = stage_body(stages()[name])
    script = REPO / stage["cmd"].split()[1]
    listed = {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
    code = {d for d in listed if d.startswith("src/")}
    assert str(script.relative_to(REPO)) in listed, f"{name}: its script is not a dependency"
    need = module_closure(script)
    assert not need - code, f"{name} imports modules dvc.yaml does not list (its results would go stale): " \
                            f"{sorted(need - code)}"
    extra = {d for d in code - need if d.endswith(".py") or (REPO / d / "__init__.py").exists()}
    assert not extra, f"{name} lists modules it does not import (an edit there would rerun it for nothing): " \
                      f"{sorted(extra)}"


def test_closure_follows_the_library():
    """The oracle itself: the train stage reaches the losses through the engine, and nothing reaches the report;
    the stages that only read a run (the classifier, sample, evaluate, the report) load neither the loop nor the
    hand-written step, so editing them reruns training only."""
    train = module_closure(REPO / "stages/train.py")
    assert "src/ganlab/engine/losses.py" in train and "src/ganlab/config.py" in train
    assert not {f for f in train if f.startswith("src/ganlab/report/")}
    loop = {"src/ganlab/engine/train.py", "src/ganlab/engine/mlp_steps.py", "src/ganlab/engine/checkpoint.py",
            "src/ganlab/engine/runners.py"}
    for stage in ("train_classifier", "sample", "evaluate", "report"):
        assert not loop & module_closure(REPO / f"stages/{stage}.py"), stage


def _package(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 3 else "(top)"


ORDER = ["(top)", "data", "engine", "evaluation", "tracking", "report", "team"]  # the pipeline; top: config, io, ...


def test_no_arrow_back_up_the_pipeline():
    """A package imports only packages before it in the pipeline (data -> engine -> evaluation -> tracking ->
    report, the team's tools beside), and no two modules import each other, even for types."""
    modules = sorted(p for p in (SRC / "ganlab").rglob("*.py"))
    graph = {str(p.relative_to(REPO)): {str(_module_file(m).relative_to(REPO)) for m in _imports(p)
                                         if _module_file(m) is not None} for p in modules}
    back = [(a, b) for a, deps in graph.items() for b in deps
            if _package(a) != "team" and ORDER.index(_package(b)) > ORDER.index(_package(a))]
    assert not back, f"imports against the pipeline's order: {back}"
    circles = [(a, b) for a, deps in graph.items() for b in deps if a != b and a in graph.get(b, set())
               and not b.endswith("__init__.py")]
    assert not circles, f"modules that import each other: {circles}"


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_code_dependency_exists(name):
    """A dependency on code that is not there (a folder moved away) fails `dvc repro` at that stage only."""
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage_body(stages()[name]).get("deps", [])]
    missing = [d for d in deps if d.startswith(("src/", "stages/")) and not (REPO / d).exists()]
    assert not missing, f"{name} depends on code that does not exist: {missing}"
