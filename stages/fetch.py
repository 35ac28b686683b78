"""DVC stage ``fetch``: the raw dataset from the first source that has it, verified, in ``paths.raw``."""

from __future__ import annotations

import logging
from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.fetch import dataset_spec, fetch_dataset
from cnnpipe.stage import run_stage

log = logging.getLogger("cnnpipe")


def body(params: Params) -> None:
    """Fetch ``fetch.dataset`` into ``<paths.raw>/<dataset>`` and log a one-line summary."""
    out_dir = Path(params.paths.raw) / params.fetch.dataset
    expected, class_names = dataset_spec(params.fetch)
    info = fetch_dataset(params.fetch, out_dir, expected, class_names)
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
