"""The shape of the codebase (issue 12): small modules, no private names across modules, a short
README, one task table, one image decoder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cnnpipe"
MAX_LINES = 350  # aim for ~300: one job per module
CODE = [*PACKAGE.rglob("*.py"), *(ROOT / "stages").glob("*.py"), *(ROOT / "pipelines").glob("*.py")]


def test_no_module_in_the_package_is_a_catch_all():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {k: v for k, v in sizes.items() if v > MAX_LINES}


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnpipe"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import {', '.join(private)}")
    assert not offenders


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert not [line for line in lines if re.search(r"\b20\d\d-\d\d-\d\d\b|load average", line)]


def test_the_tasks_are_listed_once():
    """Only cnnpipe/taskspec.py names the four tasks together; the one dispatch table keyed by
    them (evaluation/tasks.py, a plain dict of functions) is checked against it by its own test."""
    keys = ('"classifier"', '"transfer"', '"localizer"', '"unet"')
    found = sorted(p.relative_to(ROOT).as_posix() for p in CODE if all(k in p.read_text() for k in keys))
    assert found == ["cnnpipe/evaluation/tasks.py", "cnnpipe/taskspec.py"]


def test_images_are_decoded_in_one_module():
    """PIL opens image files only in cnnpipe/data/images.py (prepare and predict both call it)."""
    opens = [p.relative_to(ROOT).as_posix() for p in CODE if re.search(r"Image\.open\(", p.read_text())]
    assert opens == ["cnnpipe/data/images.py"]
