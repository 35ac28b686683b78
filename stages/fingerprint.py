"""DVC stage ``fingerprint`` (``always_changed``): content fingerprints of the data DVC does not
hold, the raw source files of ``fetch`` and each own dataset's ``path``, one JSON per consumer in
``<paths.reports>/fingerprints/``. Their bytes change only when the data does, so DVC re-runs
exactly the branch whose data changed. A probe: cheap, no MLflow run, no TensorFlow."""

from __future__ import annotations

import logging
from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.raw.fingerprint import fingerprints
from cnnpipe.io import read_json, write_json
from cnnpipe.stage_shell import run_stage

log = logging.getLogger("cnnpipe")


def body(params: Params) -> None:
    out = Path(params.paths.reports) / "fingerprints"
    changed = []
    for name, record in fingerprints(params).items():
        path = out / f"{name}.json"
        try:
            same = read_json(path) == record
        except (OSError, ValueError):
            same = False
        if not same:
            write_json(path, record)  # untouched when equal: same bytes, same mtime
            changed.append(name)
    log.info("fingerprints %s", f"changed: {', '.join(changed)}" if changed else "unchanged")


def main(argv: list[str] | None = None) -> None:
    run_stage("fingerprint", body, argv)


if __name__ == "__main__":
    main()
