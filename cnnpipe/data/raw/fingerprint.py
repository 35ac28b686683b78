"""Content fingerprints of the data that lives outside DVC: the raw Fashion-MNIST (IDX) source
files ``fetch`` reads and the files under each own dataset's ``datasets.<dataset>.path``.

The ``fingerprint`` stage (``always_changed`` in dvc.yaml) writes one small JSON per consumer;
``fetch``, ``prepare`` and ``prepare_classification`` depend on those files, so DVC re-runs a
branch exactly when its fingerprint's bytes change: new or replaced data is noticed, while a
``touch`` or a fresh checkout (same content, new mtimes) is not. Records hold relative names,
sizes and MD5s of the content, never mtimes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cnnpipe.config import FetchParams, Params
from cnnpipe.config.datasets import DatasetParams
from cnnpipe.data.raw.download import SourceUnavailable
from cnnpipe.data.raw.fetch import FASHION_MNIST_FILES, find_in_dir

# One file per consumer: a change to one dataset must not touch another branch's dependency.
NAMES = ("source", "classification", "localization", "segmentation")
CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def tree_record(location: Path) -> dict[str, list[Any]]:
    """Relative file name -> [size, md5] of a file or of every file under a directory (sorted;
    hidden files and folders, e.g. ``.DS_Store`` or ``.git``, are left out)."""
    if location.is_file():
        return {location.name: [location.stat().st_size, file_md5(location)]}
    if not location.is_dir():
        return {}  # missing: the prepare stage names it; the fingerprint records its absence
    files = sorted(p for p in location.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(location).parts))
    return {p.relative_to(location).as_posix(): [p.stat().st_size, file_md5(p)] for p in files}


def source_record(fetch: FetchParams) -> dict[str, Any]:
    """The files ``fetch`` would read from the first local source that has them (local_dir,
    then system_dir); a download from ``fetch.url`` is recorded by its URL (a mirror's files are
    pinned by their content hashes in fetch itself)."""
    for kind in ("local_dir", "system_dir"):
        location = getattr(fetch, kind)
        if location is None:
            continue
        try:
            found = find_in_dir(Path(location), list(FASHION_MNIST_FILES))
        except SourceUnavailable:
            continue
        return {"source": kind, "files": {p.name: [p.stat().st_size, file_md5(p)] for p in found.values()}}
    return {"source": "url", "url": fetch.url}


def dataset_record(dataset: DatasetParams) -> dict[str, Any]:
    """The files of an own dataset: everything under ``path`` (a CSV: the file, and the images
    under ``image_root`` or the CSV's folder). A built-in format or a URL has no local files."""
    record: dict[str, Any] = {"format": dataset.format}
    if not dataset.path:
        return {**record, "url": dataset.url} if dataset.url else record
    path = Path(dataset.path)
    record["files"] = tree_record(path)
    if dataset.format == "csv":
        images = Path(dataset.image_root) if dataset.image_root else path.parent
        record["images"] = tree_record(images)
    return record


def fingerprints(params: Params) -> dict[str, dict[str, Any]]:
    """``NAMES`` -> the record the fingerprint stage writes to ``<name>.json``."""
    return {
        "source": source_record(params.fetch),
        **{name: dataset_record(getattr(params.datasets, name)) for name in NAMES[1:]},
    }
