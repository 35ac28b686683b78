"""DVC stage ``validate``: manifest + Great Expectations suite on the raw classification data.

Writes ``<paths.reports>/validate/{manifest.csv, results.json, data_docs/}``. A failed
suite still writes the report (so it can be read), then exits 1 naming each failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.raw.idx import read_idx_pair
from cnnpipe.data.validation.manifest import classification_manifest, save_manifest
from cnnpipe.data.validation.suites import (
    raise_if_failed,
    validate_classification,
    write_report,
)
from cnnpipe.errors import DataError
from cnnpipe.io import atomic_dir, read_json
from cnnpipe.stage_shell import run_stage
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")

# split name -> IDX file prefix in the raw dataset directory
SPLITS = {"train": "train", "test": "t10k"}


def validate(params: Params) -> None:
    raw = Path(params.paths.raw) / params.fetch.dataset
    with stage_run("validate", params, param_sections=["validate"], inputs={"raw": raw}) as run:
        source_path = raw / "source.json"
        if not source_path.is_file():
            raise DataError(f"{source_path}: missing; run the fetch stage first")
        source = read_json(source_path)
        missing = [k for k in ("class_names", "image_shape") if k not in source]
        if missing:
            raise DataError(f"{source_path}: missing key(s) {', '.join(missing)}")
        splits = {
            name: read_idx_pair(raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte")
            for name, prefix in SPLITS.items()
        }
        manifest = classification_manifest(splits)
        run.log_dataset(manifest, f"{params.fetch.dataset}-manifest", run.tags["dvc.raw"], source=raw,
                        context="validation")
        report = validate_classification(
            manifest,
            class_names=source["class_names"],
            image_shape=source["image_shape"],
            balance_tolerance=params.validate.balance_tolerance,
        )
        out = Path(params.paths.reports) / "validate"
        with atomic_dir(out) as tmp:
            save_manifest(manifest, tmp / "manifest.csv")
            write_report(report, tmp)
        log.info(
            "%d images, %d failed expectation(s); report in %s",
            len(manifest), len(report.failures), out / "data_docs" / "index.html",
        )
        # Logged before the verdict, so a failed run in MLflow carries the report that explains it.
        # The manifest (megabytes) stays with DVC: it is rebuilt from the raw data.
        run.log_metrics({"images": len(manifest), "failed_expectations": len(report.failures)})
        run.log_artifacts(out / "results.json", "validate")
        run.log_artifacts(out / "data_docs", "validate/data_docs")
        raise_if_failed(report, f"{raw}")


if __name__ == "__main__":
    run_stage("validate", validate)
