"""Users' own datasets, read into one shape whatever the format.

Each reader (class folders, IDX, segmentation folders, Oxford-IIIT Pet, CSV boxes) returns a
:class:`TaskData`: per split, uint8 images resized to one square side, labels, and boxes
(fractions of the image) or masks where the format has them, plus one manifest row per item
with the facts validate checks (file, original size and mode, pixel stats, content hash, box
in pixels, mask size and values). Readers raise DataError naming the file at fault for what
cannot be read at all; what can be read but is wrong (a box outside its image, a mask of the
wrong size, a leak between splits) is left to the Great Expectations suite.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.data.images import Loaded
from cnnpipe.data.splits import split_classification
from cnnpipe.errors import DataError


@dataclass
class Items:
    """One split of a user's dataset, in memory."""

    images: list[np.ndarray] = field(default_factory=list)  # each uint8 (S, S) or (S, S, 3)
    labels: list[int] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # x, y, w, h fractions
    masks: list[np.ndarray] = field(default_factory=list)  # each uint8 (S, S)
    rows: list[dict[str, Any]] = field(default_factory=list)  # manifest facts

    def add(self, loaded: Loaded, label: int, file: Path, **facts: Any) -> None:
        self.images.append(loaded.pixels)
        self.labels.append(int(label))
        pixels = loaded.pixels
        self.rows.append({
            "file": display_name(file), "label": int(label), "height": loaded.height, "width": loaded.width,
            "mode": loaded.mode, "channels": 1 if pixels.ndim == 2 else int(pixels.shape[-1]),
            "min": int(pixels.min()), "max": int(pixels.max()), "mean": float(pixels.mean()),
            "sha256": loaded.sha256, **facts,
        })

    def subset(self, index: Sequence[int]) -> Items:
        pick = lambda seq: [seq[i] for i in index] if seq else []  # noqa: E731
        return Items(pick(self.images), pick(self.labels), pick(self.boxes), pick(self.masks), pick(self.rows))

    def arrays(self, side: int, channels: int) -> dict[str, np.ndarray]:
        """``images`` uint8 (N, S, S, C), ``labels`` uint8, and ``boxes``/``masks`` where present."""
        shape = (0, side, side, channels)
        images = np.stack(self.images) if self.images else np.zeros(shape, np.uint8)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        out = {"images": images.astype(np.uint8), "labels": np.asarray(self.labels, dtype=np.uint8)}
        if self.boxes:
            out["boxes"] = np.asarray(self.boxes, dtype=np.float32)
        if self.masks:
            out["masks"] = np.stack(self.masks).astype(np.uint8)
        return out


@dataclass
class TaskData:
    """A user's dataset for one task: ``train`` and ``test`` items and where they came from."""

    format: str
    class_names: list[str]
    splits: dict[str, Items]  # "train", "test"
    source: dict[str, Any]  # JSON-able: location, options, file counts
    mask_kind: str | None = None  # segmentation: "binary" (0/1 after reading) or "index" (class ids)
    side: int = 0
    channels: int = 1


def check_labels_fit(names: Sequence[str], what: str) -> None:
    if len(names) > 255:
        raise DataError(f"{what}: {len(names)} classes; at most 255 fit the uint8 labels")


def split_off_test(pool: Items, test_fraction: float, seed: int) -> dict[str, Items]:
    """Seeded, stratified train/test split of ``pool`` (when the data names no test split)."""
    labels = np.asarray(pool.labels)
    if len(labels) < 2:
        raise DataError(f"need at least 2 items to hold out a test split, found {len(labels)}")
    train_idx, test_idx = split_classification(np.zeros(len(labels)), labels, test_fraction, seed)
    return {"train": pool.subset(train_idx.tolist()), "test": pool.subset(test_idx.tolist())}


def display_name(path: Path | str) -> str:
    """``path`` as UTF-8 text for manifests and reports: a byte of a file name that is not
    UTF-8 (``b"caf\\xe9.png"``, read by Python as a lone surrogate) is written ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_link(path: Path, root: Path) -> None:
    """A symbolic link is followed only within the dataset folder ``root``: a dangling link, or
    one that leads outside ``root``, is a DataError naming it (a data set never reads files
    from elsewhere on the machine, and never silently loses one)."""
    if not path.is_symlink():
        return
    target = os.readlink(path)
    if not path.exists():
        raise DataError(f"{path}: a dangling symbolic link (to {target}); remove it or restore its target")
    resolved, inside = path.resolve(), root.resolve()
    if not resolved.is_relative_to(inside):
        raise DataError(f"{path}: a symbolic link to {resolved}, outside the dataset folder {root}; "
                        "copy the file into the data set instead")


def list_images(folder: Path, suffixes: Sequence[str], root: Path | None = None) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (a deterministic order on any OS).
    Symbolic links are checked against the dataset folder ``root`` (:func:`check_link`)."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for p in entries:
        if p.is_symlink() and (not p.exists() or p.suffix.lower() in suffixes):
            check_link(p, root or folder)
    return [p for p in entries if p.is_file() and p.suffix.lower() in suffixes]


def need_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DataError(f"{path}: {what} must be a directory")
    return path
