"""Where each dataset's prepared directory and validation report live: the Python copy of the
path rule dvc.yaml writes with ``${paths.prepared}/${datasets.<dataset>.format}``.

``classification`` and the ``scenes`` keep their names (the built-in and own classification
sets share ``<paths.prepared>/classification``); an own localization or segmentation dataset
is prepared into ``<paths.prepared>/<format>``, so with the default format (``scenes``) the
localizer and the U-Net read the scenes. tests/test_layout.py checks this rule against DVC's
own resolution of dvc.yaml for every format combination.
"""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.taskspec import DATASET_FORMATS, TASKS

SCENES = "scenes"  # transfer's task, and the built-in localization and segmentation format


def _name(params: Params, key: str) -> str:
    """The directory name of ``key``: a task key of cnnpipe.taskspec, a dataset, or ``scenes``."""
    dataset = TASKS[key].dataset if key in TASKS else key
    if dataset is None or dataset == SCENES:  # transfer: its new task is always the scenes
        return SCENES
    if dataset == "classification":
        return dataset
    return getattr(params.datasets, dataset).format


def prepared_dir(params: Params, key: str) -> Path:
    """``<paths.prepared>/<name>`` that ``key`` (a task key, a dataset or ``scenes``) reads."""
    return Path(params.paths.prepared) / _name(params, key)


def report_dir(params: Params, key: str) -> Path:
    """``<paths.reports>/<name>_validation``: the Great Expectations report of that prepared set."""
    return Path(params.paths.reports) / f"{_name(params, key)}_validation"


def is_own(params: Params, dataset: str) -> bool:
    """Whether ``datasets.<dataset>`` names the user's files rather than the built-in format."""
    return getattr(params.datasets, dataset).format != DATASET_FORMATS[dataset][0]
