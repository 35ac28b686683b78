"""The prepare step of users' own datasets, into the directory :mod:`cnnpipe.data.layout` names.

Own data goes: read (any format) -> manifest -> Great Expectations suite (its report is
written either way) -> a stratified, seeded validation split carved from train -> arrays +
``meta.json``, atomically, only if the suite passed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params
from cnnpipe.data.formats.readers import read_task_data
from cnnpipe.data.items import TaskData
from cnnpipe.data.layout import prepared_dir, report_dir
from cnnpipe.data.prepared import write_arrays
from cnnpipe.data.splits import split_classification
from cnnpipe.data.validation.gx import ValidationReport, raise_if_failed, save_report
from cnnpipe.data.validation.own import check_class_count, own_manifest, validate_own
from cnnpipe.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def validate_task_data(data: TaskData, out: Path, what: str) -> ValidationReport:
    """Manifest + suite of ``data``; the report (manifest.csv, results.json, Data Docs) goes to
    ``out`` atomically whatever the verdict, then a failure raises naming each expectation."""
    manifest = own_manifest(data)
    report = validate_own(manifest, data, what)
    save_report(report, out, manifest)
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
    what = f"datasets.{task} ({dp.format}: {dp.path or dp.url})"
    if task == "classification":
        check_class_count(data, what)
    validate_task_data(data, report_dir(params, task), what)
    arrays = _val_split(data, params.prepare.val_fraction, params.seed)
    meta = _meta(data, arrays, params.seed, params.prepare.val_fraction)
    with atomic_dir(prepared_dir(params, task)) as tmp:
        write_arrays(tmp, arrays)
        if task != "classification":
            meta["canvas"] = int(data.side)
        write_json(tmp / "meta.json", meta)
    log.info("datasets.%s: %s -> %s %s", task, dp.format, prepared_dir(params, task), meta["counts"])
    return meta
