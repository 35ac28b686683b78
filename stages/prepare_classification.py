"""DVC stage ``prepare_classification``: the classification set of ``datasets.classification``.

``fashion_mnist`` (default): the fetched raw IDX items (already checked by the validate stage),
stratified seeded validation carve-out, scaled to [0, 1]. ``idx`` / ``folders``: the user's
files, read, checked by their own Great Expectations suite and resized
(cnnpipe/data/formats/prepare_own.py). Writes ``<paths.prepared>/classification`` atomically and
``<paths.reports>/classification_validation``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.formats.prepare_own import prepare_own
from cnnpipe.data.layout import is_own, prepared_dir, report_dir
from cnnpipe.data.prepared import write_arrays
from cnnpipe.data.raw.fetched import read_fetched
from cnnpipe.data.splits import classification_arrays, split_items
from cnnpipe.io import atomic_dir, write_json
from cnnpipe.stage_shell import run_stage
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")


def built_in(params: Params, raw: Path, out: Path) -> dict[str, int]:
    """The fetched set, split into train/val/test in the prepared layout (uint8 images)."""
    fetched = read_fetched(raw)
    items = split_items(*fetched.splits["train"], *fetched.splits["test"], params.prepare.val_fraction, params.seed)
    arrays = classification_arrays(items)
    with atomic_dir(out) as tmp:
        write_arrays(tmp, arrays)
        write_json(tmp / "meta.json", {
            "class_names": fetched.class_names,
            "image_shape": list(arrays["train"]["images"].shape[1:]),
            "counts": items.counts(),
            "seed": params.seed,
            "val_fraction": params.prepare.val_fraction,
        })
    # Its checks are the validate stage's report; this stage's report says so.
    with atomic_dir(report_dir(params, "classification")) as tmp:
        write_json(tmp / "results.json", {"format": params.datasets.classification.format,
                                          "validated_by": "validate", "report": str(Path(params.paths.reports) / "validate")})
    return items.counts()


def body(params: Params) -> None:
    raw = Path(params.paths.raw) / params.fetch.dataset
    out = prepared_dir(params, "classification")
    with stage_run("prepare_classification", params, param_sections=["seed", "prepare", "datasets"],
                   inputs={"raw": raw}) as run:
        if is_own(params, "classification"):
            counts = prepare_own(params, "classification")["counts"]
            run.log_artifacts(report_dir(params, "classification"), "classification_validation")
        else:
            counts = built_in(params, raw, out)
        run.log_metrics({"classification": counts})
    log.info("classification: %s items per split -> %s", counts, out)


def main(argv: list[str] | None = None) -> None:
    run_stage("prepare_classification", body, argv)


if __name__ == "__main__":
    main()
