"""Which prepared directory each task reads, and the prepare step of users' own datasets.

The built-in formats keep their directories (``classification``, ``scenes``); an own
localization or segmentation dataset is prepared into ``<paths.prepared>/<format>``, the
same name dvc.yaml templates from ``datasets.<task>.format``. Own data goes: read (any
format) -> manifest -> Great Expectations suite (its report is written either way) -> a
stratified, seeded validation split carved from train -> arrays + ``meta.json``, atomically,
only if the suite passed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params
from cnnpipe.data.formats.items import TaskData
from cnnpipe.data.formats.readers import read_task_data
from cnnpipe.data.splits import split_classification
from cnnpipe.data.validation.manifest import save_manifest
from cnnpipe.data.validation.own import own_manifest, validate_own
from cnnpipe.data.validation.suites import (
    ValidationReport,
    raise_if_failed,
    write_report,
)
from cnnpipe.io import atomic_dir, save_array, write_json
from cnnpipe.taskspec import DATASET_FORMATS, TASKS

log = logging.getLogger(__name__)

def prepared_dir(params: Params, task: str) -> Path:
    """``<paths.prepared>/...`` of ``task`` (a dataset name or a task key of cnnpipe.taskspec)."""
    task = TASKS[task].dataset if task in TASKS else task
    root = Path(params.paths.prepared)
    if task is None:  # transfer: its new task is always the scenes
        return root / "scenes"
    if task == "classification":
        return root / "classification"
    return root / getattr(params.datasets, task).format


def report_dir(params: Params, task: str) -> Path:
    """Where the own data's GX report goes (``scenes`` keeps ``scenes_validation``)."""
    name = "classification" if task == "classification" else getattr(params.datasets, task).format
    return Path(params.paths.reports) / f"{name}_validation"


def is_own(params: Params, task: str) -> bool:
    return getattr(params.datasets, task).format != DATASET_FORMATS[task][0]


def validate_task_data(data: TaskData, out: Path, what: str) -> ValidationReport:
    """Manifest + suite of ``data``; the report (manifest.csv, results.json, Data Docs) goes to
    ``out`` atomically whatever the verdict, then a failure raises naming each expectation."""
    manifest = own_manifest(data)
    report = validate_own(manifest, data, what)
    with atomic_dir(out) as tmp:
        save_manifest(manifest, tmp / "manifest.csv")
        write_report(report, tmp)
    log.info("%s: %d items, %d failed expectation(s); report in %s", what, len(manifest), len(report.failures), out)
    raise_if_failed(report, what)
    return report


def _val_split(data: TaskData, val_fraction: float, seed: int) -> dict[str, dict[str, np.ndarray]]:
    train = data.splits["train"]
    labels = np.asarray(train.labels)
    train_idx, val_idx = split_classification(np.zeros(len(labels)), labels, val_fraction, seed)
    parts = {"train": train.subset(train_idx.tolist()), "val": train.subset(val_idx.tolist()),
             "test": data.splits["test"]}
    return {split: items.arrays(data.side, data.channels) for split, items in parts.items()}


def _meta(data: TaskData, arrays: dict[str, dict[str, np.ndarray]], seed: int, val_fraction: float) -> dict[str, Any]:
    return {
        "class_names": list(data.class_names),
        "format": data.format,
        "source": data.source,
        "image_shape": list(arrays["train"]["images"].shape[1:]),
        "counts": {split: int(len(a["labels"])) for split, a in arrays.items()},
        "seed": seed,
        "val_fraction": val_fraction,
        **({"mask_kind": data.mask_kind} if data.mask_kind else {}),
    }


def prepare_own(params: Params, task: str) -> dict[str, Any]:
    """Read, validate and write ``task``'s own dataset; returns its ``meta.json`` content."""
    dp = getattr(params.datasets, task)
    data = read_task_data(task, dp, params.seed, params.fetch)
    validate_task_data(data, report_dir(params, task), f"datasets.{task} ({dp.format}: {dp.path or dp.url})")
    arrays = _val_split(data, params.prepare.val_fraction, params.seed)
    meta = _meta(data, arrays, params.seed, params.prepare.val_fraction)
    with atomic_dir(prepared_dir(params, task)) as tmp:
        for split, named in arrays.items():
            if task == "classification":
                x = named["images"].astype(np.float32) / np.float32(255.0)
                save_array(tmp / f"x_{split}.npy", x)
                save_array(tmp / f"y_{split}.npy", named["labels"])
            else:
                for name, array in named.items():
                    save_array(tmp / f"{split}_{name}.npy", array)
        if task != "classification":
            meta["canvas"] = int(data.side)
        write_json(tmp / "meta.json", meta)
    log.info("datasets.%s: %s -> %s %s", task, dp.format, prepared_dir(params, task), meta["counts"])
    return meta


def index_masks(directory: Path) -> bool:
    """Whether a prepared segmentation set holds class-index masks (own ``folders`` data with
    more than one class): the U-Net then needs one softmax channel per class, whatever
    ``train_unet.multiclass`` says."""
    from cnnpipe.io import read_json

    meta = directory / "meta.json"
    return meta.is_file() and read_json(meta).get("mask_kind") == "index"
