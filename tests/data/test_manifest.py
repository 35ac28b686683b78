"""Manifests on tiny hand-built arrays: columns, pixel stats, hashes, leakage, box and mask facts."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from cnnpipe.data.validation.manifest import (
    CLASSIFICATION_COLUMNS,
    SCENES_COLUMNS,
    classification_manifest,
    save_manifest,
    scenes_manifest,
)
from cnnpipe.errors import DataError


def _images(n, side=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


def test_classification_columns_and_stats():
    train = _images(3)
    train[1] = 7  # constant image: min = max = mean = 7
    df = classification_manifest({"train": (train, np.array([0, 1, 2], np.uint8))})
    assert tuple(df.columns) == CLASSIFICATION_COLUMNS
    assert list(df["split"]) == ["train"] * 3
    assert list(df["index"]) == [0, 1, 2]
    assert list(df["label"]) == [0, 1, 2]
    assert set(df["height"]) == set(df["width"]) == {4} and set(df["channels"]) == {1}
    assert (df.loc[1, "min"], df.loc[1, "max"], df.loc[1, "mean"]) == (7, 7, 7.0)
    assert df.loc[0, "min"] == train[0].min() and df.loc[0, "max"] == train[0].max()
    assert df.loc[0, "mean"] == pytest.approx(train[0].astype(float).mean())
    assert df.loc[2, "sha256"] == hashlib.sha256(train[2].tobytes()).hexdigest()
    assert not df["in_other_split"].any()


def test_hashes_and_leakage_across_splits_only():
    train, test = _images(3, seed=1), _images(2, seed=2)
    test[1] = train[0]  # leaked into test
    train[2] = train[1]  # duplicate inside train: not leakage
    df = classification_manifest(
        {"train": (train, np.zeros(3, np.uint8)), "test": (test, np.zeros(2, np.uint8))}
    )
    assert df.loc[0, "sha256"] == df.loc[4, "sha256"]
    assert df.loc[1, "sha256"] == df.loc[2, "sha256"]
    assert list(df["in_other_split"]) == [True, False, False, False, True]
    assert df["in_other_split"].dtype == bool


def test_channels_from_4d_images_and_shape_errors():
    df = classification_manifest({"train": (np.zeros((2, 5, 6, 3), np.uint8), np.zeros(2, np.uint8))})
    assert list(df.loc[0, ["height", "width", "channels"]]) == [5, 6, 3]
    with pytest.raises(DataError, match="labels have shape"):
        classification_manifest({"train": (_images(3), np.zeros(2, np.uint8))})
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        classification_manifest({"train": (np.zeros((2, 5), np.uint8), np.zeros(2, np.uint8))})


def _scene(side, x0, y0, x1, y1):
    """A scene whose mask is the rectangle [y0:y1, x0:x1] and whose box bounds it exactly."""
    image = np.zeros((side, side, 1), np.uint8)
    image[y0:y1, x0:x1] = 200
    mask = np.zeros((side, side), np.uint8)
    mask[y0:y1, x0:x1] = 1
    box = np.array([x0, y0, x1 - x0, y1 - y0], np.float32) / side
    return image, mask, box


def _scenes(rects, side=16, labels=None):
    images, masks, boxes = zip(*(_scene(side, *r) for r in rects))
    return {
        "images": np.stack(images), "masks": np.stack(masks), "boxes": np.stack(boxes),
        "labels": np.asarray(labels if labels is not None else range(len(rects)), np.uint8),
    }


def test_scenes_columns_boxes_and_masks():
    data = _scenes([(2, 4, 10, 8), (0, 0, 16, 16)])
    data["boxes"][1] = [0.25, 0.25, 0.5, 0.5]  # does not bound its (full-canvas) mask
    df = scenes_manifest({"train": data})
    assert tuple(df.columns) == SCENES_COLUMNS
    row = df.loc[0]
    assert (row.box_x, row.box_y, row.box_w, row.box_h) == pytest.approx((2 / 16, 4 / 16, 8 / 16, 4 / 16))
    assert (row.box_x2, row.box_y2) == pytest.approx((10 / 16, 8 / 16))
    assert row.mask_coverage == pytest.approx(32 / 256)
    assert (row.mask_x, row.mask_y, row.mask_w, row.mask_h) == pytest.approx((2 / 16, 4 / 16, 8 / 16, 4 / 16))
    assert row.mask_values_ok and row.box_bounds_mask
    assert df.loc[1, "mask_coverage"] == 1.0 and not df.loc[1, "box_bounds_mask"]
    assert list(df.loc[0, ["height", "width", "channels"]]) == [16, 16, 1]


def test_scenes_box_within_half_pixel_bounds_mask():
    data = _scenes([(2, 4, 10, 8), (2, 4, 10, 8)])
    data["boxes"][0, 0] += 0.4 / 16  # 0.4 px off: still bounds
    data["boxes"][1, 2] += 0.6 / 16  # right edge 0.6 px off: does not
    df = scenes_manifest({"train": data})
    assert list(df["box_bounds_mask"]) == [True, False]


def test_scenes_empty_mask_and_bad_values():
    data = _scenes([(2, 4, 10, 8), (2, 4, 10, 8)])
    data["masks"][0] = 0
    data["masks"][1, 5, 5] = 2
    df = scenes_manifest({"test": data})
    assert df.loc[0, "mask_coverage"] == 0.0
    assert df.loc[0, ["mask_x", "mask_y", "mask_w", "mask_h"]].isna().all()
    assert not df.loc[0, "box_bounds_mask"]
    assert list(df["mask_values_ok"]) == [True, False]


def test_scenes_leakage_and_shape_errors():
    a, b = _scenes([(2, 4, 10, 8)]), _scenes([(2, 4, 10, 8), (1, 1, 3, 3)])
    df = scenes_manifest({"train": a, "test": b})
    assert list(df["in_other_split"]) == [True, True, False]
    bad = dict(a, boxes=np.zeros((1, 3), np.float32))
    with pytest.raises(DataError, match="boxes"):
        scenes_manifest({"train": bad})
    with pytest.raises(DataError, match="missing array"):
        scenes_manifest({"train": {"images": a["images"]}})


def test_save_manifest_round_trip(tmp_path):
    df = classification_manifest({"train": (_images(2), np.array([3, 4], np.uint8))})
    path = tmp_path / "sub" / "manifest.csv"
    save_manifest(df, path)
    back = pd.read_csv(path)
    assert tuple(back.columns) == CLASSIFICATION_COLUMNS
    assert list(back["label"]) == [3, 4] and list(back["sha256"]) == list(df["sha256"])
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temp file left
