"""The stratified, seeded validation carve-out every prepared set is split with.

Pure numpy on in-memory arrays; the prepare stages read the raw files and write the results
in the layout of :mod:`cnnpipe.data.prepared`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnpipe.data.prepared import SPLITS
from cnnpipe.errors import DataError


def split_classification(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``(x, y)`` into (train_idx, val_idx), both sorted ascending.

    Per class ``c`` with ``n_c`` items, ``round(val_fraction * n_c)`` of them (half rounds
    up) go to validation, chosen by a seeded shuffle; at least one item of a class with
    more than one stays in train. Classes are visited in sorted order so the result
    depends only on ``(y, val_fraction, seed)``.
    """
    y = np.asarray(y)
    if len(x) != len(y):
        raise DataError(f"split_classification: {len(x)} images but {len(y)} labels")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    val_parts = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        # floor(v + 0.5), not round(): Python's banker's rounding would make 0.5 -> 0.
        k = int(np.floor(val_fraction * len(members) + 0.5))
        k = min(k, max(len(members) - 1, 0))
        val_parts.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, np.int64)
    in_val = np.zeros(len(y), bool)
    in_val[val_idx] = True
    # Sorted indices keep the raw file order; the training input pipeline shuffles.
    return np.flatnonzero(~in_val), val_idx


@dataclass(frozen=True)
class ItemSplits:
    """The raw uint8 items of each split: what classification and scenes are both built from."""

    images: dict[str, np.ndarray]  # split -> uint8 (N, H, W)
    labels: dict[str, np.ndarray]  # split -> uint8 (N,)

    def counts(self) -> dict[str, int]:
        return {s: int(len(self.labels[s])) for s in SPLITS}


def split_items(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    val_fraction: float,
    seed: int,
) -> ItemSplits:
    """Carve validation out of train (stratified, seeded); test is kept as is, in file order."""
    train_idx, val_idx = split_classification(x_train, y_train, val_fraction, seed)
    return ItemSplits(
        images={"train": x_train[train_idx], "val": x_train[val_idx], "test": np.asarray(x_test)},
        labels={
            "train": y_train[train_idx].astype(np.uint8),
            "val": y_train[val_idx].astype(np.uint8),
            "test": np.asarray(y_test).astype(np.uint8),
        },
    )


def classification_arrays(items: ItemSplits) -> dict[str, dict[str, np.ndarray]]:
    """The classification set as ``{split: {"images": uint8 (N, H, W, 1), "labels": uint8 (N,)}}``."""
    for split in SPLITS:
        x = np.asarray(items.images[split])
        if x.dtype != np.uint8 or x.ndim != 3:
            raise DataError(f"classification {split} images: expected uint8 (N, H, W), got {x.dtype} {x.shape}")
    return {split: {"images": items.images[split][..., np.newaxis], "labels": items.labels[split]} for split in SPLITS}
