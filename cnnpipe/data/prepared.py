"""Readers for the prepared arrays (the prepare stage's output contract)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.errors import DataError
from cnnpipe.io import load_array, read_json


@dataclass(frozen=True)
class Split:
    """One split of a prepared set; fields absent from a format are None."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None


def _need(path: Path, producer: str = "prepare") -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing; it is written by the {producer!r} stage (run `dvc repro {producer}`)")
    return path


def class_names(directory: Path) -> list[str]:
    return list(read_json(_need(directory / "meta.json"))["class_names"])


def load_classification(directory: Path, split: str) -> Split:
    """``x_<split>.npy`` float32 (N, H, W, C) in [0, 1] and ``y_<split>.npy`` uint8."""
    return Split(
        images=load_array(_need(directory / f"x_{split}.npy")),
        labels=load_array(_need(directory / f"y_{split}.npy")),
    )


def load_scenes(directory: Path, split: str) -> Split:
    """Scenes of one split: uint8 images (N, S, S, 1), labels, (x, y, w, h) boxes, {0,1} masks.

    A sharded directory (``prepare.shard_size`` > 0) is read whole here; training streams it
    instead (:func:`cnnpipe.data.shards.open_scenes`).
    """
    from cnnpipe.data.scenes.shards import (
        open_sharded,  # shards builds on Split: import late
    )

    sharded = open_sharded(directory, split)
    if sharded is not None:
        return sharded.to_split()
    return Split(
        images=load_array(_need(directory / f"{split}_images.npy")),
        labels=load_array(_need(directory / f"{split}_labels.npy")),
        boxes=_optional(directory, split, "boxes"),
        masks=_optional(directory, split, "masks"),
    )


def _optional(directory: Path, split: str, name: str) -> np.ndarray | None:
    """Own data has boxes or masks only where its format does (CSV: no masks; segmentation
    folders: no boxes); the built-in scenes always have both."""
    path = directory / f"{split}_{name}.npy"
    if path.exists():
        return load_array(path)
    if "format" in read_json(_need(directory / "meta.json")):
        return None
    return load_array(_need(path))


def test_split(directory: Path) -> Split:
    """The test split of any prepared set: classification arrays, scenes, own data, sharded or not."""
    if (directory / "x_test.npy").exists():
        return load_classification(directory, "test")
    return load_scenes(directory, "test")
