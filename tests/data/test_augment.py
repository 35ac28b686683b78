"""Train-time augmentation: hand-computed box flips, image/mask consistency, identity, seeds."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnnpipe.config import AugmentParams
from cnnpipe.data.augment import (
    augment_images,
    augment_with_boxes,
    augment_with_masks,
    map_seeded,
)

OFF = AugmentParams(flip=False, shift=0.0, rotation=0.0, zoom=0.0)
FLIP = AugmentParams(flip=True, shift=0.0, rotation=0.0, zoom=0.0)
ALL = AugmentParams(flip=True, shift=0.2, rotation=0.1, zoom=0.2)


def _rect_batch(n: int, side: int, box_px: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """n copies of one bright rectangle (x, y, w, h in px) and its box as fractions."""
    x, y, w, h = box_px
    images = np.zeros((n, side, side, 1), np.float32)
    images[:, y : y + h, x : x + w] = 1.0
    boxes = np.tile(np.array(box_px, np.float32) / side, (n, 1))
    return images, boxes


def _bbox(image: np.ndarray) -> np.ndarray:
    on = image[..., 0] > 0.5
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    return np.array([cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], np.float32)


def test_flip_maps_boxes_hand_computed() -> None:
    # 16 px canvas, box x=2, w=4 px -> flipped x = 16 - 2 - 4 = 10 px, i.e. 1 - x - w.
    images, boxes = _rect_batch(32, 16, (2, 3, 4, 5))
    out_images, out_boxes = augment_with_boxes(images, boxes, FLIP, seed=[0, 1])
    out_images, out_boxes = out_images.numpy(), out_boxes.numpy()
    flipped = out_boxes[:, 0] != boxes[:, 0]
    assert 0 < flipped.sum() < 32  # both outcomes occur
    np.testing.assert_allclose(out_boxes[flipped], [[10 / 16, 3 / 16, 4 / 16, 5 / 16]] * int(flipped.sum()))
    np.testing.assert_allclose(out_boxes[~flipped], boxes[~flipped])
    np.testing.assert_array_equal(out_images[flipped], images[flipped][:, :, ::-1])


def test_boxes_follow_flip_and_shift_pixel_exactly_with_clipping() -> None:
    # Rectangles near the border and big shifts: the moved box must equal the visible
    # rectangle's bbox exactly, stay inside the image and keep w, h > 0.
    params = AugmentParams(flip=True, shift=1.0, rotation=0.5, zoom=0.5)  # rotation/zoom ignored here
    for box_px in ((0, 0, 3, 2), (10, 12, 6, 4), (20, 1, 4, 23)):
        images, boxes = _rect_batch(64, 24, box_px)
        out_images, out_boxes = augment_with_boxes(images, boxes, params, seed=[3, sum(box_px)])
        out_images, out_boxes = out_images.numpy(), out_boxes.numpy()
        assert (out_boxes[:, 2:] > 0).all() and (out_boxes[:, :2] >= 0).all()
        assert (out_boxes[:, :2] + out_boxes[:, 2:] <= 1 + 1e-6).all()
        assert set(np.unique(out_images)) <= {0.0, 1.0}  # integer shifts: no resampling blur
        for image, box in zip(out_images, out_boxes):
            np.testing.assert_allclose(box * 24, _bbox(image), atol=1e-4)


def test_masks_get_the_same_transform_as_images() -> None:
    rng = np.random.default_rng(0)
    masks = (rng.random((8, 20, 20)) < 0.3).astype(np.uint8)
    images = masks[..., None].astype(np.float32)
    # Flip + integer shift: an image equal to its mask stays equal.
    params = AugmentParams(flip=True, shift=0.3, rotation=0.0, zoom=0.0)
    out_images, out_masks = augment_with_masks(images, masks, params, seed=[5, 6])
    assert out_masks.dtype == tf.uint8
    np.testing.assert_array_equal(out_images.numpy()[..., 0], out_masks.numpy())
    assert not np.array_equal(out_masks.numpy(), masks)
    # With rotation and zoom the mask is resampled nearest (values stay {0, 1}) and
    # agrees with the bilinear image away from edges.
    blocks = np.kron(rng.random((8, 5, 5)) < 0.5, np.ones((4, 4))).astype(np.uint8)
    out_images, out_masks = augment_with_masks(blocks[..., None].astype(np.float32), blocks, ALL, seed=[5, 6])
    assert set(np.unique(out_masks.numpy())) <= {0, 1}
    agree = (out_images.numpy()[..., 0] > 0.5) == (out_masks.numpy() == 1)
    assert agree.mean() > 0.9


def test_zero_strengths_are_the_identity() -> None:
    rng = np.random.default_rng(1)
    images = rng.random((4, 12, 12, 1)).astype(np.float32)
    masks = (images[..., 0] > 0.5).astype(np.uint8)
    boxes = np.tile(np.array([[0.25, 0.5, 0.25, 0.25]], np.float32), (4, 1))
    np.testing.assert_array_equal(augment_images(images, OFF, [1, 2]).numpy(), images)
    out_images, out_masks = augment_with_masks(images, masks, OFF, [1, 2])
    np.testing.assert_array_equal(out_images.numpy(), images)
    np.testing.assert_array_equal(out_masks.numpy(), masks)
    out_images, out_boxes = augment_with_boxes(images, boxes, OFF, [1, 2])
    np.testing.assert_array_equal(out_images.numpy(), images)
    np.testing.assert_array_equal(out_boxes.numpy(), boxes)


def test_same_seed_same_result_other_seed_different() -> None:
    images = np.random.default_rng(2).random((6, 16, 16, 1)).astype(np.float32)
    a = augment_images(images, ALL, [7, 7]).numpy()
    b = augment_images(images, ALL, [7, 7]).numpy()
    c = augment_images(images, ALL, [7, 8]).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, images)


def test_map_seeded_reproducible_per_run_and_fresh_per_epoch() -> None:
    images = np.random.default_rng(3).random((8, 16, 16, 1)).astype(np.float32)
    labels = np.arange(8)

    def pipeline() -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        return map_seeded(ds, lambda x, y, seed: (augment_images(x, ALL, seed), y), seed=42)

    def epoch(ds: tf.data.Dataset) -> np.ndarray:
        return np.concatenate([x.numpy() for x, _ in ds])

    ds = pipeline()
    first, second = epoch(ds), epoch(ds)
    assert not np.array_equal(first, second)  # each epoch draws new augmentations
    again = pipeline()
    np.testing.assert_array_equal(epoch(again), first)  # ...the same ones on every run
    np.testing.assert_array_equal(epoch(again), second)
    assert not np.array_equal(first[:4], first[4:])
