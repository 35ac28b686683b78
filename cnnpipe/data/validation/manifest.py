"""Per-image manifests: one row per image with shape, pixel stats, content hash, box and mask facts.

A manifest turns every property the validate stage checks into a plain column, so a
Great Expectations suite can check it row by row (and Data Docs can show the rows at
fault). Cross-row facts (train/test leakage) become boolean columns here for the same
reason. Everything is vectorized except hashing, which is one C call per image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cnnpipe.errors import DataError
from cnnpipe.io import atomic_file

CLASSIFICATION_COLUMNS = (
    "split", "index", "label", "height", "width", "channels",
    "min", "max", "mean", "sha256", "in_other_split",
)
BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h", "box_x2", "box_y2")
MASK_COLUMNS = (
    "mask_coverage", "mask_x", "mask_y", "mask_w", "mask_h", "mask_values_ok", "box_bounds_mask",
)
SCENES_COLUMNS = CLASSIFICATION_COLUMNS + BOX_COLUMNS + MASK_COLUMNS

# A box "bounds" its mask when every edge is within this many pixels of the mask's tight bbox.
BOX_MASK_TOLERANCE_PX = 0.5


def _image_rows(split: str, images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Columns shared by every manifest, for one split."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim not in (3, 4):
        raise DataError(f"split {split!r}: images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"split {split!r}: {images.shape[0]} images but labels have shape {labels.shape}"
        )
    n, height, width = images.shape[:3]
    channels = images.shape[3] if images.ndim == 4 else 1
    flat = images.reshape(n, -1)
    contiguous = np.ascontiguousarray(images)
    return pd.DataFrame(
        {
            "split": split,
            "index": np.arange(n, dtype=np.int64),
            "label": labels.astype(np.int64),
            "height": np.full(n, height, dtype=np.int64),
            "width": np.full(n, width, dtype=np.int64),
            "channels": np.full(n, channels, dtype=np.int64),
            "min": flat.min(axis=1).astype(np.int64) if n else np.zeros(0, np.int64),
            "max": flat.max(axis=1).astype(np.int64) if n else np.zeros(0, np.int64),
            "mean": flat.mean(axis=1, dtype=np.float64),
            "sha256": [hashlib.sha256(img.tobytes()).hexdigest() for img in contiguous],
        }
    )


def mark_leakage(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``in_other_split``: the same image bytes occur in more than one split."""
    df["in_other_split"] = df.groupby("sha256")["split"].transform("nunique").gt(1).astype(bool)
    return df


def classification_manifest(splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per image of each split ``name -> (images (N,H,W[,C]), labels (N,))``.

    Pixel stats are on the stored values (0..255 for uint8); ``sha256`` hashes the image
    bytes, and ``in_other_split`` is True where that hash also appears in another split.
    """
    frames = [_image_rows(name, images, labels) for name, (images, labels) in splits.items()]
    if not frames:
        return pd.DataFrame(columns=list(CLASSIFICATION_COLUMNS))
    return mark_leakage(pd.concat(frames, ignore_index=True))[list(CLASSIFICATION_COLUMNS)]


def _mask_bbox(masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Tight bbox of each mask's nonzero pixels as fractions (x, y, w, h); NaN for an empty mask."""
    n, size_y, size_x = masks.shape
    on = masks != 0
    rows = on.any(axis=2)  # (N, H): which rows have a mask pixel
    cols = on.any(axis=1)  # (N, W)
    nonempty = rows.any(axis=1)
    # argmax finds the first True; on the reversed axis it finds the last.
    y0 = rows.argmax(axis=1)
    y1 = size_y - rows[:, ::-1].argmax(axis=1)  # exclusive
    x0 = cols.argmax(axis=1)
    x1 = size_x - cols[:, ::-1].argmax(axis=1)
    nan = np.nan
    x = np.where(nonempty, x0 / size_x, nan)
    y = np.where(nonempty, y0 / size_y, nan)
    w = np.where(nonempty, (x1 - x0) / size_x, nan)
    h = np.where(nonempty, (y1 - y0) / size_y, nan)
    return x, y, w, h


def _scene_rows(split: str, data: Mapping[str, np.ndarray]) -> pd.DataFrame:
    missing = sorted({"images", "masks", "boxes", "labels"} - set(data))
    if missing:
        raise DataError(f"scenes split {split!r}: missing array(s) {', '.join(missing)}")
    images, masks = np.asarray(data["images"]), np.asarray(data["masks"])
    boxes = np.asarray(data["boxes"], dtype=np.float64)
    df = _image_rows(split, images, np.asarray(data["labels"]))
    n = len(df)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.shape != (n, *images.shape[1:3]):
        raise DataError(f"scenes split {split!r}: masks shape {masks.shape} does not match images {images.shape}")
    if boxes.shape != (n, 4):
        raise DataError(f"scenes split {split!r}: boxes must be (N, 4) = (x, y, w, h), got {boxes.shape}")

    bx, by, bw, bh = boxes.T
    df["box_x"], df["box_y"], df["box_w"], df["box_h"] = bx, by, bw, bh
    df["box_x2"], df["box_y2"] = bx + bw, by + bh

    size_y, size_x = masks.shape[1:]
    df["mask_coverage"] = (masks != 0).reshape(n, -1).mean(axis=1, dtype=np.float64) if n else np.zeros(0)
    mx, my, mw, mh = _mask_bbox(masks)
    df["mask_x"], df["mask_y"], df["mask_w"], df["mask_h"] = mx, my, mw, mh
    df["mask_values_ok"] = ((masks == 0) | (masks == 1)).reshape(n, -1).all(axis=1) if n else np.zeros(0, bool)

    # Compare edges in pixels; NaN (empty mask) compares False, so an empty mask never "fits".
    tol = BOX_MASK_TOLERANCE_PX + 1e-6  # float32 boxes: k/S is not exact
    edges = [
        (bx * size_x, mx * size_x),
        (by * size_y, my * size_y),
        ((bx + bw) * size_x, (mx + mw) * size_x),
        ((by + bh) * size_y, (my + mh) * size_y),
    ]
    fits = np.ones(n, dtype=bool)
    for box_edge, mask_edge in edges:
        fits &= np.abs(box_edge - mask_edge) <= tol
    df["box_bounds_mask"] = fits
    return df


def scenes_manifest(splits: Mapping[str, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """One row per scene of each split ``name -> {images, masks, boxes, labels}``.

    ``images`` uint8 (N,S,S,1), ``masks`` (N,S,S) in {0,1}, ``boxes`` (N,4) = (x, y, w, h)
    as fractions of the canvas. Adds box edges, the mask's coverage and tight bbox, whether
    mask values are in {0,1}, and whether the box equals the mask's bbox (within 0.5 px).
    """
    frames = [_scene_rows(name, data) for name, data in splits.items()]
    if not frames:
        return pd.DataFrame(columns=list(SCENES_COLUMNS))
    return mark_leakage(pd.concat(frames, ignore_index=True))[list(SCENES_COLUMNS)]


def save_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as CSV atomically (no pandas index; floats in full precision)."""
    with atomic_file(path, "w") as f:
        df.to_csv(f, index=False, lineterminator="\n")
