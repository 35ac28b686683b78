"""Fetch a raw IDX dataset from the first source that has it, verify it, write it atomically.

Sources, in order: ``fetch.local_dir``, ``fetch.system_dir`` (Debian ``dataset-fashion-mnist``),
``fetch.url``. A source that is not configured or lacks the files is skipped; a source that has
them but whose content fails verification is an error (never a silent fall-back to a weaker
source). Verification is on the *decompressed* bytes: the Debian ``.gz`` files differ from
upstream's, their content does not.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.config import FetchParams
from cnnpipe.data.raw.download import SourceUnavailable, download
from cnnpipe.data.raw.idx import read_bytes_maybe_gz, read_idx_pair
from cnnpipe.errors import DataError
from cnnpipe.io import atomic_dir, sha256_bytes, write_json
from cnnpipe.security import redact

log = logging.getLogger(__name__)

# Canonical name -> (sha256, size in bytes) of the decompressed file.
FASHION_MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Split -> (images file, labels file): each pair must agree on its count.
FASHION_MNIST_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCE_ORDER = ("local_dir", "system_dir", "url")


def dataset_spec(params: FetchParams) -> tuple[dict[str, tuple[str, int] | None], tuple[str, ...]]:
    """The (pinned hashes, class names) that ``params.dataset`` implies."""
    if params.dataset == "fashion-mnist":
        return dict(FASHION_MNIST_FILES), tuple(FASHION_MNIST_CLASSES)
    names = params.class_names or tuple(str(i) for i in range(10))
    return dict.fromkeys(FASHION_MNIST_FILES), tuple(names)


def fetch_dataset(
    params: FetchParams,
    out_dir: Path,
    expected: Mapping[str, tuple[str, int] | None] = FASHION_MNIST_FILES,
    class_names: Sequence[str] = FASHION_MNIST_CLASSES,
    *,
    backoff_s: float = 1.0,
) -> dict[str, Any]:
    """Write the verified, decompressed files and ``source.json`` to ``out_dir``; return that record.

    ``expected`` maps each file to its pinned (sha256, size) of the decompressed content, or
    to None for a user's own MNIST-like set (then the hashes found are recorded, not checked).
    Raises DataError if a source has the files but they fail verification, or if no source
    has them. On any error nothing is written and an existing ``out_dir`` stays as it was.
    """
    skipped: list[str] = []
    for kind in SOURCE_ORDER:
        location = getattr(params, kind)
        try:
            if location is None:
                raise SourceUnavailable(f"not configured (fetch.{kind} is null)")
            if kind == "url":
                # Downloads land in a scratch dir, never in the output; it goes away either way.
                with tempfile.TemporaryDirectory(prefix="cnnpipe-fetch-") as scratch:
                    files = _download_all(location, list(expected), Path(scratch), params, backoff_s)
                    return _ingest(kind, location, files, params.dataset, out_dir, expected, class_names)
            files = find_in_dir(Path(location), list(expected))
            return _ingest(kind, location, files, params.dataset, out_dir, expected, class_names)
        except SourceUnavailable as skip:
            log.info("source %s skipped: %s", kind, redact(str(skip)))
            skipped.append(redact(f"{kind}: {skip}"))
    raise DataError(
        f"no source could provide {params.dataset}: {'; '.join(skipped)}. To fix: install the Debian "
        f"package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), set fetch.local_dir "
        f"to a directory holding {', '.join(expected)} (plain or .gz), or allow network access to fetch.url"
    )


def find_in_dir(directory: Path, names: list[str]) -> dict[str, Path]:
    """Each file, plain or ``.gz``, in ``directory``; SourceUnavailable naming what is missing."""
    if not directory.exists():
        raise SourceUnavailable(f"{directory} does not exist")
    if not directory.is_dir():
        raise SourceUnavailable(f"{directory} is not a directory")
    found: dict[str, Path] = {}
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
    missing = [n for n in names if n not in found]
    if missing:
        raise SourceUnavailable(f"{directory} lacks {', '.join(missing)} (plain or .gz)")
    return found


def _ingest(
    kind: str,
    location: str,
    files: Mapping[str, Path],
    dataset: str,
    out_dir: Path,
    expected: Mapping[str, tuple[str, int] | None],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Verify ``files`` and write them (decompressed) plus source.json to ``out_dir``, atomically."""
    log.info("using source %s: %s", kind, redact(str(location)))
    try:
        with atomic_dir(out_dir) as tmp:
            records: dict[str, dict[str, Any]] = {}
            for name, path in files.items():
                data = read_bytes_maybe_gz(path)
                digest, size = sha256_bytes(data), len(data)
                pinned = expected[name]
                if pinned is not None and (digest, size) != pinned:
                    want_digest, want_size = pinned
                    raise DataError(
                        f"{path}: decompressed content fails verification: expected sha256 "
                        f"{want_digest} ({want_size} bytes), found {digest} ({size} bytes); "
                        f"not falling back to a later source: fix or remove this file"
                    )
                (tmp / name).write_bytes(data)
                records[name] = {"sha256": digest, "bytes": size}
            counts, image_shape = _check_splits(files, len(class_names))
            record = {
                "dataset": dataset,
                "source": kind,
                # As configured (not resolved): the same params give the same bytes on any machine.
                "location": redact(str(location)),  # never a user:password@
                "files": records,
                "class_names": list(class_names),
                "counts": counts,
                "image_shape": image_shape,
            }
            write_json(tmp / "source.json", record)
    except DataError as err:
        raise DataError(redact(f"source {kind} ({location}): {err}")) from None
    return record


def _check_splits(files: Mapping[str, Path], n_classes: int) -> tuple[dict[str, int], list[int]]:
    """Parse each image/label pair; return per-split counts and the common (height, width)."""
    counts: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for split, (images_name, labels_name) in FASHION_MNIST_SPLITS.items():
        images, labels = read_idx_pair(files[images_name], files[labels_name])
        if len(labels) == 0:
            raise DataError(f"{files[images_name]}: the {split} split is empty (0 images); a dataset needs "
                            "images in both train and test")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{files[labels_name]}: labels must be integers, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise DataError(
                f"{files[labels_name]}: labels span {labels.min()}..{labels.max()}, "
                f"outside 0..{n_classes - 1} for the {n_classes} class names"
            )
        counts[split] = int(len(labels))
        shapes[split] = tuple(int(d) for d in images.shape[1:3])
    if len(set(shapes.values())) > 1:
        raise DataError(f"image shapes differ between splits: {shapes}")
    return counts, list(next(iter(shapes.values())))


def _download_all(
    base_url: str, names: list[str], dest: Path, params: FetchParams, backoff_s: float
) -> dict[str, Path]:
    """Download ``<base_url>/<name>.gz`` for each name into ``dest``; SourceUnavailable if any cannot be had."""
    files: dict[str, Path] = {}
    for name in names:
        path = dest / f"{name}.gz"
        download(f"{base_url.rstrip('/')}/{name}.gz", path, params.timeout_s, params.retries, backoff_s)
        files[name] = path
    return files
