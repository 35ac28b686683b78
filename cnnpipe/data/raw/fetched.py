"""The fetch stage's output read back: its IDX splits and the record in ``source.json``.

Every stage downstream of ``fetch`` (validate, prepare, prepare_classification) reads the raw
data through :func:`read_fetched`, so a missing or incomplete fetch fails the same way,
naming the file and the stage that writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.data.raw.fetch import FASHION_MNIST_SPLITS
from cnnpipe.data.raw.idx import read_idx_pair
from cnnpipe.errors import DataError
from cnnpipe.io import read_json

# What downstream stages read from source.json (the fetch stage always writes both).
REQUIRED_KEYS = ("class_names", "image_shape")


@dataclass(frozen=True)
class Fetched:
    """One fetched dataset: ``splits`` maps ``train``/``test`` to (images (N, H, W), labels (N,))."""

    root: Path
    class_names: list[str]
    image_shape: list[int]  # (height, width)
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    source: dict[str, Any]  # the whole source.json record


def read_source(raw_dir: Path) -> dict[str, Any]:
    """``raw_dir/source.json``, checked for the keys downstream stages read."""
    path = Path(raw_dir) / "source.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; it is written by the 'fetch' stage (run it first)")
    source = read_json(path)
    missing = [k for k in REQUIRED_KEYS if k not in source]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; re-run the 'fetch' stage")
    return source


def read_fetched(raw_dir: Path) -> Fetched:
    """The fetched dataset in ``raw_dir`` (the fetch stage's ``<paths.raw>/<fetch.dataset>``)."""
    raw_dir = Path(raw_dir)
    source = read_source(raw_dir)
    splits = {
        split: read_idx_pair(raw_dir / images, raw_dir / labels)
        for split, (images, labels) in FASHION_MNIST_SPLITS.items()
    }
    return Fetched(raw_dir, list(source["class_names"]), list(source["image_shape"]), splits, source)
