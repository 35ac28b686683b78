"""dvc.yaml sees every input: each stage's code deps cover the import closure of its shell.

The closure follows every ``import cnnpipe...`` / ``from cnnpipe... import ...`` statement,
including imports inside functions (they still run). Tracking code is exempt: it records a run
and cannot change what the stage computes, and listing it would retrain every model whenever a
log line changes (fetch lists cnnpipe/security.py itself: it redacts what source.json records).
Package markers that import nothing are exempt too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = ("cnnpipe/tracking/", "cnnpipe/flows/", "cnnpipe/security.py")


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return {n for n in names if n.split(".")[0] == "cnnpipe"}


def _imports_anything(path: Path) -> bool:
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(ast.parse(path.read_text())))


def closure(start: Path) -> set[Path]:
    """Every project file ``start`` imports, directly or not (package __init__ files included)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                found = _module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def _stages() -> list[tuple[str, dict]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return [(name, stage.get("do", stage)) for name, stage in stages.items()]


@pytest.mark.parametrize("name,stage", _stages(), ids=[n for n, _ in _stages()])
def test_code_deps_cover_the_import_closure(name: str, stage: dict) -> None:
    shell = ROOT / "stages" / f"{name}.py"
    deps = [d for d in stage["deps"] if not d.startswith("${")]
    for dep in deps:
        assert (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"

    def covered(rel: str) -> bool:
        if rel.endswith("__init__.py") and not _imports_anything(ROOT / rel):
            return True  # a package marker (docstring, version) computes nothing
        return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps) or rel.startswith(EXEMPT)

    missing = sorted(rel for p in closure(shell) if not covered(rel := p.relative_to(ROOT).as_posix()))
    assert not missing, f"stage {name} imports code dvc.yaml does not list as a dep: {missing}"


def test_the_closure_follows_lazy_and_package_imports(tmp_path: Path) -> None:
    found = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "stages" / "evaluate.py")}
    assert "cnnpipe/__init__.py" in found and "cnnpipe/evaluation/evaluate.py" in found
