"""The prepared-data contract: one on-disk layout for every task, read through one class.

A prepared set is a directory written by the prepare stages::

    meta.json                    {"class_names": [...], "counts": {...}, ...}
    {split}_images.npy           uint8 (N, H, W, C)   split in train, val, test
    {split}_labels.npy           uint8 (N,)           index into class_names
    {split}_boxes.npy            float32 (N, 4)       (x, y, w, h), fractions of the side (optional)
    {split}_masks.npy            uint8 (N, H, W)      {0, 1}, or class ids + 1 ("mask_kind": "index")

or, sharded (``meta.json`` lists ``"shards": {split: [n0, n1, ...]}``), the same fields as
``{split}_{field}-00000.npy`` ... (:mod:`cnnpipe.data.scenes.shards` writes them). Classification
data, the scenes and own data all follow it; images stay uint8 on disk and become floats in
[0, 1] only where a model reads them (the tf.data map, evaluation, serving). Which optional
fields a set has is read off the files, so every reader sees the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.errors import DataError
from cnnpipe.io import load_array, read_json, save_array

SPLITS = ("train", "val", "test")
FIELDS = ("images", "labels", "boxes", "masks")
OPTIONAL = ("boxes", "masks")


def array_file(directory: Path, split: str, name: str) -> Path:
    return directory / f"{split}_{name}.npy"


def shard_file(directory: Path, split: str, name: str, index: int) -> Path:
    return directory / f"{split}_{name}-{index:05d}.npy"


def write_arrays(directory: Path, splits: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Save ``{split: {field: array}}`` in the single-array layout (``directory``: a temp dir)."""
    for split, arrays in splits.items():
        for name, array in arrays.items():
            if name not in FIELDS:
                raise ValueError(f"unknown prepared field {name!r}; fields: {', '.join(FIELDS)}")
            save_array(array_file(directory, split, name), array)


@dataclass(frozen=True)
class Split:
    """One split in memory; optional fields the set does not have are None."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ShardedSplit:
    """One split of a sharded set; loads one shard at a time (training streams it)."""

    directory: Path
    split: str
    sizes: tuple[int, ...]
    fields: tuple[str, ...] = ("images", "labels")

    def __len__(self) -> int:
        return sum(self.sizes)

    def load(self, index: int) -> Split:
        """Shard ``index`` in memory (a few MiB at the default sizes)."""
        arrays = {}
        for name in self.fields:
            path = shard_file(self.directory, self.split, name, index)
            if not path.exists():
                raise DataError(f"{path}: missing shard {index} of {len(self.sizes)} listed in meta.json; "
                                "re-run the 'prepare' stage")
            arrays[name] = load_array(path)
        if len(arrays["labels"]) != self.sizes[index]:
            raise DataError(f"{self.directory}: {self.split} shard {index} holds {len(arrays['labels'])} "
                            f"items, meta.json says {self.sizes[index]}")
        return Split(**arrays)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image, e.g. (64, 64, 1), read from the first shard's header only."""
        return tuple(np.load(shard_file(self.directory, self.split, "images", 0), mmap_mode="r").shape[1:])

    def labels(self) -> np.ndarray:
        """Every label of the split, in order (one byte per item)."""
        return np.concatenate([load_array(shard_file(self.directory, self.split, "labels", k))
                               for k in range(len(self.sizes))])

    def to_split(self) -> Split:
        """The whole split in memory, for the small splits evaluation reads at once."""
        parts = [self.load(k) for k in range(len(self.sizes))]
        return Split(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in self.fields})


@dataclass(frozen=True)
class PreparedSet:
    """A prepared directory: its class names, layout and splits (see the module docstring)."""

    root: Path
    class_names: tuple[str, ...]
    fields: tuple[str, ...]  # images, labels and whichever of boxes/masks the set has
    index_masks: bool  # masks hold class ids + 1 (own segmentation folders of several classes)
    shards: dict[str, tuple[int, ...]] | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, root: str | Path, producer: str = "prepare") -> PreparedSet:
        """Read ``root/meta.json``; a missing set names the stage that writes it."""
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: missing; it is written by the {producer!r} stage "
                            f"(run `dvc repro {producer}`)")
        meta = read_json(meta_path)
        shards = {s: tuple(int(n) for n in sizes) for s, sizes in meta["shards"].items()} if meta.get("shards") else None

        def present(name: str) -> bool:
            split = "train" if not shards or shards.get("train") else next(iter(shards))
            return (shard_file(root, split, name, 0) if shards else array_file(root, split, name)).exists()

        fields = ("images", "labels", *(name for name in OPTIONAL if present(name)))
        return cls(root, tuple(meta["class_names"]), fields, meta.get("mask_kind") == "index", shards, meta)

    @property
    def has_boxes(self) -> bool:
        return "boxes" in self.fields

    @property
    def has_masks(self) -> bool:
        return "masks" in self.fields

    def require(self, name: str, setting: str) -> None:
        """Fail in one line when the set lacks ``name`` (boxes, masks) that ``setting`` needs."""
        if name not in self.fields:
            raise DataError(f"{self.root}: has no {name}; {setting} must name a format with {name}")

    def split(self, name: str) -> Split | ShardedSplit:
        """A split to train on: streamed shards when the set is sharded, else arrays in memory."""
        if self.shards is not None:
            if not self.shards.get(name):
                raise DataError(f"{self.root / 'meta.json'}: lists shards but none for split {name!r}")
            return ShardedSplit(self.root, name, self.shards[name], self.fields)
        return Split(**{f: load_array(self._need(array_file(self.root, name, f))) for f in self.fields})

    def load(self, name: str) -> Split:
        """A whole split in memory (evaluation, registration), sharded or not."""
        split = self.split(name)
        return split.to_split() if isinstance(split, ShardedSplit) else split

    def _need(self, path: Path) -> Path:
        if not path.exists():
            raise DataError(f"{path}: missing; it is written by the prepare stages (run `dvc repro`)")
        return path


def examples(split: Split | ShardedSplit) -> int:
    return len(split)


def image_shape(split: Split | ShardedSplit) -> tuple[int, ...]:
    return split.image_shape if isinstance(split, ShardedSplit) else tuple(split.images.shape[1:])


def split_labels(split: Split | ShardedSplit) -> np.ndarray:
    return split.labels() if isinstance(split, ShardedSplit) else split.labels


def content_id(split: Split | ShardedSplit) -> tuple:
    """Cheap identity of a split's content for checkpoint fingerprints (sizes + label sum)."""
    if isinstance(split, ShardedSplit):
        return (split.split, split.sizes, int(split.labels().sum()))
    return (split.images.shape, int(split.labels.sum()))
