"""cnnpipe/data/layout.py is the one Python copy of dvc.yaml's path rule: for every format
combination, the directories DVC resolves from dvc.yaml (its own ``${...}`` interpolation) are
the ones ``prepared_dir``/``report_dir`` name."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import yaml

from cnnpipe.config import load_params
from cnnpipe.data.layout import SCENES, prepared_dir, report_dir
from cnnpipe.taskspec import DATASET_FORMATS, TASKS

ROOT = Path(__file__).resolve().parents[2]
# A source for each own format (never read here: only the params must be valid).
SOURCES = {"idx": {"path": "/data/idx"}, "folders": {"path": "/data/folders"}, "csv": {"path": "/data/boxes.csv"},
           "oxford_pet": {"path": "/data/oxford-iiit-pet"}}
COMBINATIONS = [
    (cls, loc, seg)
    for cls, (loc, seg) in zip(
        itertools.cycle(DATASET_FORMATS["classification"]),
        itertools.product(DATASET_FORMATS["localization"], DATASET_FORMATS["segmentation"]),
    )
]


def _resolved_stages(project: Path) -> dict[str, tuple[set[Path], set[Path]]]:
    """Stage name -> (deps, outs) as DVC resolves dvc.yaml against the project's params.yaml."""
    from dvc.repo import Repo

    Repo.init(str(project), no_scm=True)
    with Repo(str(project)) as repo:
        return {
            stage.name: ({Path(d.def_path) for d in stage.deps}, {Path(o.def_path) for o in stage.outs})
            for stage in repo.index.stages
        }


@pytest.mark.parametrize(("cls", "loc", "seg"), COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def test_dvc_resolves_the_prepared_and_report_dirs_that_layout_names(tmp_path, cls, loc, seg):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dataset, fmt in (("classification", cls), ("localization", loc), ("segmentation", seg)):
        raw["datasets"][dataset].update(format=fmt, **SOURCES.get(fmt, {}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = load_params(tmp_path / "params.yaml")
    stages = _resolved_stages(tmp_path)

    both = lambda key: {prepared_dir(params, key), report_dir(params, key)}
    assert stages["prepare"][1] == both(SCENES) | both("localization") | both("segmentation")
    assert stages["prepare_classification"][1] == both("classification")
    prepared_root = Path(params.paths.prepared)
    for task in TASKS.values():
        for name in (task.producer, f"evaluate@{task.key}", f"register@{task.key}"):
            reads = {d for d in stages[name][0] if d.is_relative_to(prepared_root)}
            assert reads == {prepared_dir(params, task.key)}, name
