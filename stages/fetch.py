"""DVC stage ``fetch``: the raw dataset from the first source that has it, verified, in ``paths.raw``."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cnnpipe.config import Params
from cnnpipe.data.raw.fetch import dataset_spec, fetch_dataset
from cnnpipe.stage_shell import run_stage
from cnnpipe.tracking.lineage import content_hash
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")


def body(params: Params) -> None:
    """Fetch ``fetch.dataset`` into ``<paths.raw>/<dataset>``; log its record, file table and hash."""
    out_dir = Path(params.paths.raw) / params.fetch.dataset
    expected, class_names = dataset_spec(params.fetch)
    with stage_run("fetch", params, param_sections=["fetch"], inputs={}) as run:
        info = fetch_dataset(params.fetch, out_dir, expected, class_names)
        run.log_artifacts(out_dir / "source.json", "fetch")
        # The dataset as written: one row per verified file, digest over all of them.
        files = pd.DataFrame.from_dict(info["files"], orient="index").rename_axis("file").reset_index()
        run.log_dataset(files, info["dataset"], content_hash(out_dir), source=info["location"], context="fetched")
        run.log_metrics({"images": info["counts"]})
    h, w = info["image_shape"]
    log.info(
        "%s: %d train + %d test images of %dx%d, %d classes, from %s (%s) -> %s",
        info["dataset"], info["counts"]["train"], info["counts"]["test"], h, w,
        len(info["class_names"]), info["source"], info["location"], out_dir,
    )


def main(argv: list[str] | None = None) -> None:
    run_stage("fetch", body, argv)


if __name__ == "__main__":
    main()
