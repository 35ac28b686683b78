"""The task table is the one list of tasks: dvc.yaml's per-task stages and params agree with it."""

from pathlib import Path

import yaml

from cnnpipe.config import load_params
from cnnpipe.taskspec import DATASET_FORMATS, PRODUCERS, TASKS

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_dvc_foreach_groups_are_the_task_table():
    for group in ("evaluate", "register"):
        assert list(DVC["stages"][group]["foreach"]) == list(TASKS), group


def test_every_producer_is_a_dvc_stage_and_every_model_file_has_one():
    assert {t.producer for t in TASKS.values()} <= set(DVC["stages"])
    assert set(PRODUCERS) == {f for t in TASKS.values() for f in t.model_files}


def test_every_task_has_its_register_params_and_dataset():
    register = load_params(ROOT / "params.yaml").register
    for task in TASKS.values():
        assert getattr(register, task.name_param) and 0 <= getattr(register, task.floor_param) <= 1
        assert task.dataset is None or task.dataset in DATASET_FORMATS


def test_foreach_model_paths_match_the_table():
    for key, item in DVC["stages"]["evaluate"]["foreach"].items():
        assert item["model"].endswith("/" + TASKS[key].model_path), key
