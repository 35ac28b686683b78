"""DVC stage ``prepare``: the scenes set from the raw IDX items, and the localization and
segmentation data sets named in ``datasets`` (the classification set has its own stage,
``prepare_classification``).

Writes ``<paths.prepared>/scenes`` atomically and the scenes' Great Expectations report in
``<paths.reports>/scenes_validation``; the data is written only if the scenes pass. An own
localization or segmentation dataset goes to ``<paths.prepared>/<format>`` with its report in
``<paths.reports>/<format>_validation`` (cnnpipe/data/layout.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cnnpipe.config import Params, to_dict
from cnnpipe.data.formats.prepare_own import prepare_own
from cnnpipe.data.layout import SCENES, is_own, prepared_dir, report_dir
from cnnpipe.data.raw.fetched import read_fetched
from cnnpipe.data.scenes.build import compose_scenes, write_scenes
from cnnpipe.data.splits import split_items
from cnnpipe.data.validation.gx import raise_if_failed, save_report
from cnnpipe.data.validation.suites import validate_scenes
from cnnpipe.stage_shell import run_stage
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")


def body(params: Params) -> None:
    """Compose, validate and save the scenes; then prepare each own localization/segmentation set."""
    start = time.perf_counter()
    raw = Path(params.paths.raw) / params.fetch.dataset
    scene_params = params.prepare.scenes
    with stage_run("prepare", params, param_sections=["seed", "prepare", "datasets"], inputs={"raw": raw}) as run:
        fetched = read_fetched(raw)
        x_train, y_train = fetched.splits["train"]
        run.log_dataset(x_train, f"{params.fetch.dataset}-train", run.tags["dvc.raw"], source=raw, targets=y_train)
        # The same train/val/test items as the classification set (stage prepare_classification).
        items = split_items(*fetched.splits["train"], *fetched.splits["test"], params.prepare.val_fraction,
                            params.seed)

        t = time.perf_counter()
        with compose_scenes(items, scene_params, params.seed, params.prepare.shard_size,
                            near=Path(params.paths.prepared)) as scenes:
            log.info("scenes: %s composed in %.1f s", scenes.counts, time.perf_counter() - t)

            t = time.perf_counter()
            report = validate_scenes(scenes.manifest, n_classes=len(fetched.class_names), canvas=scene_params.canvas)
            save_report(report, report_dir(params, SCENES))
            log.info("scenes validation: %s in %.1f s", "passed" if report.success else "FAILED",
                     time.perf_counter() - t)
            # Logged before the verdict, so a failed run in MLflow carries the report that explains it.
            run.log_metrics({"classification": items.counts(), "scenes": scenes.counts,
                             "scenes_failed_expectations": len(report.failures)})
            run.log_artifacts(report_dir(params, SCENES), "scenes_validation")
            raise_if_failed(report, "scenes")

            write_scenes(prepared_dir(params, SCENES), scenes, {
                "class_names": fetched.class_names,
                "canvas": scene_params.canvas,
                "counts": scenes.counts,
                "seed": params.seed,
                "scenes": to_dict(scene_params),
            })

        # Own localization / segmentation data (datasets.<dataset>), into <prepared>/<format>.
        done: set[Path] = set()
        for dataset in ("localization", "segmentation"):
            if is_own(params, dataset) and prepared_dir(params, dataset) not in done:
                prepare_own(params, dataset)
                done.add(prepared_dir(params, dataset))
    log.info("wrote %s in %.1f s total", params.paths.prepared, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    run_stage("prepare", body, argv)


if __name__ == "__main__":
    main()
