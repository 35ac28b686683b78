"""The scenes generator on tiny hand-made items: contract, geometry, determinism, split purity."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import section

from cnnpipe.data.scenes.compose import build_scene_splits, make_scenes, split_rngs
from cnnpipe.errors import DataError

SMALL = section("prepare.scenes", n_train=40, n_val=10, n_test=10)


def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items like Fashion-MNIST's: a textured bright rectangle of random size on black."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        h, w = rng.integers(8, 27, 2)
        r, c = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
        images[i, r : r + h, c : c + w] = rng.integers(60, 256, (h, w))
    return images, (np.arange(n) % 10).astype(np.uint8)


def _squares(values: list[int]) -> np.ndarray:
    """Full-frame constant items: resized they stay constant, so every pixel is traceable."""
    return np.stack([np.full((28, 28), v, np.uint8) for v in values])


def _mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1


def test_contract_shapes_dtypes_and_geometry() -> None:
    images, labels = _blobs(30)
    out = make_scenes(images, labels, 50, SMALL, np.random.default_rng(1))
    c = SMALL.canvas
    assert out["images"].shape == (50, c, c, 1) and out["images"].dtype == np.uint8
    assert out["masks"].shape == (50, c, c) and out["masks"].dtype == np.uint8
    assert out["boxes"].shape == (50, 4) and out["boxes"].dtype == np.float32
    assert out["labels"].shape == (50,) and out["labels"].dtype == np.uint8
    assert set(np.unique(out["masks"])) <= {0, 1}

    x, y, w, h = out["boxes"].T
    assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x + w <= 1).all() and (y + h <= 1).all()
    # An item is at most max_side px, so its box is too.
    assert (w <= SMALL.max_side / c).all() and (h <= SMALL.max_side / c).all()
    coverage = out["masks"].reshape(50, -1).mean(1)
    assert ((coverage > 0) & (coverage < 1)).all()
    for mask, box in zip(out["masks"], out["boxes"]):
        # Exactly, not approximately: the box is built from the mask.
        assert tuple(np.round(box * c).astype(int)) == _mask_bbox(mask)
        assert np.allclose(box * c, np.round(box * c))


def test_item_side_drawn_within_min_max() -> None:
    # A full-frame item's mask is the whole pasted square: its box side is the drawn side.
    params = SMALL.model_copy(update=dict(min_side=20, max_side=24, clutter=0, noise_std=0.0))
    out = make_scenes(_squares([200, 220]), np.array([0, 1], np.uint8), 60, params, np.random.default_rng(0))
    sides = np.round(out["boxes"][:, 2:] * params.canvas).astype(int)
    assert (sides[:, 0] == sides[:, 1]).all()
    assert set(sides[:, 0]) == set(range(20, 25))  # 60 draws of 5 values: all of them, nothing else


def test_labels_follow_the_pasted_item() -> None:
    # Item value encodes its label; with no clutter/noise the scene's max is the item value.
    values = [100 + 10 * k for k in range(10)]
    params = SMALL.model_copy(update=dict(clutter=0, noise_std=0.0))
    out = make_scenes(_squares(values), np.arange(10, dtype=np.uint8), 30, params, np.random.default_rng(3))
    peaks = out["images"].reshape(30, -1).max(1)
    assert (peaks == np.array(values)[out["labels"]]).all()


def test_same_seed_same_scenes_other_seed_different() -> None:
    images, labels = _blobs(20)
    a = make_scenes(images, labels, 12, SMALL, np.random.default_rng(7))
    b = make_scenes(images, labels, 12, SMALL, np.random.default_rng(7))
    c = make_scenes(images, labels, 12, SMALL, np.random.default_rng(8))
    for key in a:
        assert a[key].tobytes() == b[key].tobytes()
    assert not np.array_equal(a["images"], c["images"])


def test_split_streams_are_independent() -> None:
    images, labels = _blobs(20)
    split = {s: images for s in ("train", "val", "test")}
    split_labels = {s: labels for s in ("train", "val", "test")}
    a = build_scene_splits(split, split_labels, SMALL, seed=5)
    b = build_scene_splits(split, split_labels, SMALL.model_copy(update=dict(n_test=3)), seed=5)
    for key in a["train"]:
        assert np.array_equal(a["train"][key], b["train"][key])
        assert np.array_equal(a["val"][key], b["val"][key])
    assert len(b["test"]["labels"]) == 3
    assert not np.array_equal(split_rngs(5)["train"].random(4), split_rngs(5)["test"].random(4))


def test_each_split_uses_only_its_own_items() -> None:
    # Train items are 100, test items 200 (val 150): any pixel from the wrong split shows.
    params = SMALL.model_copy(update=dict(noise_std=0.0))
    images = {"train": _squares([100] * 5), "val": _squares([150] * 5), "test": _squares([200] * 5)}
    labels = {s: np.zeros(5, np.uint8) for s in images}
    scenes = build_scene_splits(images, labels, params, seed=0)
    for split, value in (("train", 100), ("val", 150), ("test", 200)):
        assert set(np.unique(scenes[split]["images"])) == {0, value}


def test_clutter_count_and_fragments_come_from_other_items() -> None:
    # Distinct constant items; fragments are 8x8 and fully bright, the item is small.
    values = [60 + 10 * k for k in range(15)]
    items = _squares(values)
    labels = np.arange(15, dtype=np.uint8) % 10
    for k in (0, 2, 6):
        params = SMALL.model_copy(update=dict(
            clutter=k, clutter_min=8, clutter_max=8, min_side=10, max_side=10, noise_std=0.0
        ))
        out = make_scenes(items, labels, 80, params, np.random.default_rng(k))
        outside = out["images"][..., 0].copy()
        for scene, mask, box in zip(outside, out["masks"], out["boxes"]):
            own = scene[mask == 1][0]
            x, y, w, h = np.round(box * params.canvas).astype(int)
            scene[y : y + h, x : x + w] = 0  # drop the item's own square
            assert own not in scene, "a fragment came from the scene's own item"
        lit = (outside > 0).reshape(80, -1).sum(1)
        # Overlaps can only hide fragment pixels; some scene shows all k fragments whole.
        assert lit.max() == k * 64 and (lit <= k * 64).all()


def test_blank_items_are_never_pasted() -> None:
    items = np.concatenate([_squares([0, 0]), _blobs(6)[0]])
    labels = np.array([9, 9, 0, 1, 2, 3, 4, 5], np.uint8)
    out = make_scenes(items, labels, 40, SMALL, np.random.default_rng(0))
    assert 9 not in out["labels"]


def test_bad_inputs_fail_with_data_error() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="uint8"):
        make_scenes(np.zeros((3, 28, 28), np.float32), np.zeros(3, np.uint8), 2, SMALL, rng)
    with pytest.raises(DataError, match="blank"):
        make_scenes(_squares([0, 0]), np.zeros(2, np.uint8), 2, SMALL, rng)
    with pytest.raises(DataError, match="at least 2"):
        make_scenes(_squares([9]), np.zeros(1, np.uint8), 2, SMALL, rng)
    with pytest.raises(DataError, match="labels"):
        make_scenes(_squares([9, 9]), np.zeros(3, np.uint8), 2, SMALL, rng)
