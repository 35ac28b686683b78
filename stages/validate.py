"""DVC stage ``validate``: manifest + Great Expectations suite on the raw classification data.

Writes ``<paths.reports>/validate/{manifest.csv, results.json, data_docs/}`` (``data_docs/`` is in
``.dvcignore``: its HTML carries the validation time, so DVC hashes the rest only). A failed
suite still writes the report (so it can be read), then exits 1 naming each failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.raw.fetched import read_fetched
from cnnpipe.data.validation.gx import raise_if_failed, save_report
from cnnpipe.data.validation.manifest import classification_manifest
from cnnpipe.data.validation.suites import validate_classification
from cnnpipe.stage_shell import run_stage
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")


def body(params: Params) -> None:
    """Check the fetched ``<paths.raw>/<fetch.dataset>``; the report goes to ``<paths.reports>/validate``."""
    raw = Path(params.paths.raw) / params.fetch.dataset
    out = Path(params.paths.reports) / "validate"
    with stage_run("validate", params, param_sections=["validate"], inputs={"raw": raw}) as run:
        fetched = read_fetched(raw)
        manifest = classification_manifest(fetched.splits)
        run.log_dataset(manifest, f"{params.fetch.dataset}-manifest", run.tags["dvc.raw"], source=raw,
                        context="validation")
        report = validate_classification(
            manifest,
            class_names=fetched.class_names,
            image_shape=fetched.image_shape,
            balance_tolerance=params.validate.balance_tolerance,
        )
        save_report(report, out, manifest)
        log.info(
            "%d images, %d failed expectation(s); report in %s (Data Docs, timestamped: not hashed by DVC, "
            "see .dvcignore)", len(manifest), len(report.failures), out / "data_docs" / "index.html",
        )
        # Logged before the verdict, so a failed run in MLflow carries the report that explains it.
        # The manifest (megabytes) stays with DVC: it is rebuilt from the raw data.
        run.log_metrics({"images": len(manifest), "failed_expectations": len(report.failures)})
        run.log_artifacts(out / "results.json", "validate")
        run.log_artifacts(out / "data_docs", "validate/data_docs")
        raise_if_failed(report, f"{raw}")


def main(argv: list[str] | None = None) -> None:
    run_stage("validate", body, argv)


if __name__ == "__main__":
    main()
