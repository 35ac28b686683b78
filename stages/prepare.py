"""DVC stage ``prepare``: the scenes set from the raw IDX items, and the localization and
segmentation data sets named in ``datasets`` (the classification set has its own stage,
``prepare_classification``).

Writes ``<paths.prepared>/scenes`` atomically and the scenes' Great Expectations report in
``<paths.reports>/scenes_validation``; the data is written only if the scenes pass. An own
localization or segmentation dataset goes to ``<paths.prepared>/<format>`` with its report in
``<paths.reports>/<format>_validation`` (cnnpipe/data/datasets.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import Params, to_dict
from cnnpipe.data.formats.prepare_own import is_own, prepare_own, prepared_dir
from cnnpipe.data.raw.fetch import FASHION_MNIST_SPLITS
from cnnpipe.data.raw.idx import read_idx_pair
from cnnpipe.data.scenes.compose import build_scene_splits
from cnnpipe.data.scenes.shards import sharded_scenes_manifest, write_scene_shards
from cnnpipe.data.splits import SPLITS, split_items
from cnnpipe.data.validation.manifest import scenes_manifest
from cnnpipe.data.validation.suites import (
    raise_if_failed,
    validate_scenes,
    write_report,
)
from cnnpipe.errors import DataError
from cnnpipe.io import atomic_dir, read_json, save_array, write_json
from cnnpipe.stage_shell import run_stage
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")


def _save(out_dir: Path, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
    with atomic_dir(out_dir) as tmp:
        for name, array in arrays.items():
            save_array(tmp / f"{name}.npy", array)
        write_json(tmp / "meta.json", meta)


def body(params: Params) -> None:
    """Split, normalize and save the classification set; compose, validate and save the scenes."""
    start = time.perf_counter()
    raw = Path(params.paths.raw) / params.fetch.dataset
    prepared = Path(params.paths.prepared)
    scene_params = params.prepare.scenes
    with stage_run("prepare", params, param_sections=["seed", "prepare", "datasets"], inputs={"raw": raw}) as run, \
            contextlib.ExitStack() as stack:
        if not (raw / "source.json").exists():
            raise DataError(f"{raw / 'source.json'}: missing; it is written by the 'fetch' stage")
        class_names = list(read_json(raw / "source.json")["class_names"])
        x_train, y_train = read_idx_pair(*(raw / name for name in FASHION_MNIST_SPLITS["train"]))
        x_test, y_test = read_idx_pair(*(raw / name for name in FASHION_MNIST_SPLITS["test"]))
        run.log_dataset(x_train, f"{params.fetch.dataset}-train", run.tags["dvc.raw"], source=raw, targets=y_train)

        # The same train/val/test items as the classification set (stage prepare_classification).
        items = split_items(x_train, y_train, x_test, y_test, params.prepare.val_fraction, params.seed)

        t = time.perf_counter()
        shard_size = params.prepare.shard_size
        if shard_size:
            # Composed and written a shard at a time into a staging dir; moved into place below.
            prepared.mkdir(parents=True, exist_ok=True)
            staging = stack.enter_context(tempfile.TemporaryDirectory(prefix=".scenes.shards-", dir=prepared))
            frames: list = []
            shards = write_scene_shards(
                Path(staging), items.images, items.labels, scene_params, params.seed, shard_size,
                on_shard=lambda split, arrays: frames.append(scenes_manifest({split: arrays})),
            )
            manifest = sharded_scenes_manifest(frames)
            scene_counts = {split: sum(shards[split]) for split in SPLITS}
        else:
            scenes = build_scene_splits(items.images, items.labels, scene_params, params.seed)
            manifest = scenes_manifest(scenes)
            scene_counts = {split: int(len(scenes[split]["labels"])) for split in SPLITS}
        log.info("scenes: %s composed in %.1f s", scene_counts, time.perf_counter() - t)

        t = time.perf_counter()
        report = validate_scenes(manifest, n_classes=len(class_names), canvas=scene_params.canvas)
        report_dir = Path(params.paths.reports) / "scenes_validation"
        with atomic_dir(report_dir) as tmp:
            write_report(report, tmp)
        verdict = "passed" if report.success else "FAILED"
        log.info("scenes validation: %s in %.1f s", verdict, time.perf_counter() - t)
        # Logged before the verdict, so a failed run in MLflow carries the report that explains it.
        run.log_metrics({"classification": items.counts(), "scenes": scene_counts,
                         "scenes_failed_expectations": len(report.failures)})
        run.log_artifacts(report_dir, "scenes_validation")
        raise_if_failed(report, "scenes")

        scenes_meta = {
            "class_names": class_names,
            "canvas": scene_params.canvas,
            "counts": scene_counts,
            "seed": params.seed,
            "scenes": to_dict(scene_params),
        }
        if shard_size:
            with atomic_dir(prepared / "scenes") as tmp:
                for path in Path(staging).iterdir():
                    os.replace(path, tmp / path.name)
                write_json(tmp / "meta.json", {**scenes_meta, "shard_size": shard_size, "shards": shards})
        else:
            _save(
                prepared / "scenes",
                {f"{split}_{name}": array for split in SPLITS for name, array in scenes[split].items()},
                scenes_meta,
            )

        # Own localization / segmentation data (datasets.<task>), into <prepared>/<format>.
        done: set[Path] = set()
        for task in ("localization", "segmentation"):
            if is_own(params, task) and prepared_dir(params, task) not in done:
                prepare_own(params, task)
                done.add(prepared_dir(params, task))
    log.info("wrote %s in %.1f s total", prepared, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    run_stage("prepare", body, argv)


if __name__ == "__main__":
    main()
