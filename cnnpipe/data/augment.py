"""Train-time augmentation as stateless TensorFlow ops for ``tf.data`` pipelines.

Every function works on a **batch** (use ``ds.batch(b).map(...)``: one transform per batch
call is much faster than per example) and takes a stateless seed, a shape-(2,) integer
tensor, so a seeded run is reproducible. :func:`map_seeded` supplies a fresh seed per batch
and per epoch from one integer.

Ops, each skipped when its strength is 0 (no random draw, no resampling):

- flip: horizontal, probability 1/2 per example.
- shift: integer pixel translation, uniform in ``[-shift*side, +shift*side]`` per axis.
- rotation: angle uniform in ``[-rotation, +rotation]`` full turns (the keras RandomRotation factor).
- zoom: scale uniform in ``[1 - zoom, 1 + zoom]`` about the centre (> 1 magnifies).

Pixels moved in from outside the image are filled with 0 (the data's background). Each op
draws from its own sub-seed, so enabling one does not change the draws of another.

Kept instead of Keras' RandomFlip/RandomTranslation/RandomRotation/RandomZoom layers: those draw
from a stateful ``SeedGenerator``, here each batch's transform is a pure function of its seed,
so a seeded run (parallel map included) repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from cnnpipe.config import AugmentParams

_OPS = ("flip", "shift", "rotation", "zoom")


def _sub_seeds(seed: Any) -> dict[str, tf.Tensor]:
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    parts = tf.random.experimental.stateless_split(seed, num=len(_OPS))
    return {op: parts[i] for i, op in enumerate(_OPS)}


def _flip_draw(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.random.stateless_uniform([batch], seed) < 0.5


def _flip(x: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """Reverse the width axis (axis 2) of the examples where ``flip`` is true."""
    cond = tf.reshape(flip, [-1] + [1] * (x.shape.rank - 1))
    return tf.where(cond, tf.reverse(x, axis=[2]), x)


def _shift_draw(
    batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor, frac: float, seed: tf.Tensor
) -> tf.Tensor:
    """Integer (dx, dy) per example, float32 (B, 2); integers keep masks and boxes exact."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    out = []
    for side, s in ((width, seeds[0]), (height, seeds[1])):
        limit = tf.cast(tf.round(frac * tf.cast(side, tf.float32)), tf.int32)
        out.append(tf.random.stateless_uniform([batch], s, minval=-limit, maxval=limit + 1, dtype=tf.int32))
    return tf.cast(tf.stack(out, axis=1), tf.float32)


def _affine(
    height: tf.Tensor, width: tf.Tensor, shift: tf.Tensor, angle: tf.Tensor, scale: tf.Tensor
) -> tf.Tensor:
    """Per-example transforms (B, 8) for ImageProjectiveTransformV3.

    Forward map: out = c + scale * R(angle) (in - c) + shift, with c the image centre in
    pixel-index coordinates; the op wants the inverse (output pixel -> input point).
    """
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # Inverse linear part M = R(-angle) / scale; in = M (out - c - shift) + c.
    tx = cx + shift[:, 0]
    ty = cy + shift[:, 1]
    a0, a1 = cos, sin
    b0, b1 = -sin, cos
    a2 = cx - (a0 * tx + a1 * ty)
    b2 = cy - (b0 * tx + b1 * ty)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _warp(x: tf.Tensor, transforms: tf.Tensor, interpolation: str) -> tf.Tensor:
    """Apply per-example transforms to (B, H, W) or (B, H, W, C), filling with 0."""
    squeeze = x.shape.rank == 3
    x4 = x[..., tf.newaxis] if squeeze else x
    y = tf.raw_ops.ImageProjectiveTransformV3(
        images=x4,
        transforms=transforms,
        output_shape=tf.shape(x4)[1:3],
        fill_value=tf.constant(0.0, tf.float32),
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    return y[..., 0] if squeeze else y


def _geometry(
    images: tf.Tensor, params: AugmentParams, seed: Any, *, rotate_zoom: bool
) -> tuple[tf.Tensor | None, tf.Tensor | None, tf.Tensor | None]:
    """Draw (flip, shift, transforms) for a batch; None for whatever is switched off."""
    seeds = _sub_seeds(seed)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    flip = _flip_draw(batch, seeds["flip"]) if params.flip else None
    shift = _shift_draw(batch, height, width, params.shift, seeds["shift"]) if params.shift > 0 else None
    rotation = rotate_zoom and params.rotation > 0
    zoom = rotate_zoom and params.zoom > 0
    if shift is None and not rotation and not zoom:
        return flip, None, None
    turn = params.rotation * 2.0 * math.pi
    angle = (
        tf.random.stateless_uniform([batch], seeds["rotation"], -turn, turn)
        if rotation
        else tf.zeros([batch])
    )
    scale = (
        tf.random.stateless_uniform([batch], seeds["zoom"], 1.0 - params.zoom, 1.0 + params.zoom)
        if zoom
        else tf.ones([batch])
    )
    shift_xy = shift if shift is not None else tf.zeros([batch, 2])
    return flip, shift, _affine(height, width, shift_xy, angle, scale)


def augment_images(images: tf.Tensor, params: AugmentParams, seed: Any) -> tf.Tensor:
    """Augment a batch of images (B, H, W, C) with flip, shift, rotation and zoom (bilinear)."""
    images = tf.convert_to_tensor(images)
    flip, _shift, transforms = _geometry(images, params, seed, rotate_zoom=True)
    if flip is not None:
        images = _flip(images, flip)
    if transforms is not None:
        images = _warp(images, transforms, "BILINEAR")
    return images


def augment_with_masks(
    images: tf.Tensor, masks: tf.Tensor, params: AugmentParams, seed: Any
) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply one geometric transform per example to images (B, H, W, C), bilinear, and to
    their masks (B, H, W) or (B, H, W, 1), nearest (so mask values stay in the label set)."""
    images, masks = tf.convert_to_tensor(images), tf.convert_to_tensor(masks)
    flip, _shift, transforms = _geometry(images, params, seed, rotate_zoom=True)
    if flip is not None:
        images, masks = _flip(images, flip), _flip(masks, flip)
    if transforms is not None:
        images = _warp(images, transforms, "BILINEAR")
        masks = _warp(masks, transforms, "NEAREST")
    return images, masks


def augment_with_boxes(
    images: tf.Tensor, boxes: tf.Tensor, params: AugmentParams, seed: Any
) -> tuple[tf.Tensor, tf.Tensor]:
    """Flip and shift images (B, H, W, C) and their boxes (B, 4) = (x, y, w, h) fractions.

    Rotation and zoom are NOT applied here (to neither images nor boxes): the axis-aligned
    box of a rotated item is not its tight box. Flip maps x to 1 - x - w. A shift moves the
    box and clips it to the image; it is limited per example so that at least one pixel
    row and column of the box stays inside, hence w, h > 0 always. A box cut by the border
    bounds the visible part of the original box (tight to the visible mask only if the
    mask touched the cut edge).
    """
    images = tf.convert_to_tensor(images)
    flip, shift, _ = _geometry(images, params, seed, rotate_zoom=False)
    boxes = tf.cast(boxes, tf.float32)
    if flip is not None:
        images = _flip(images, flip)
        x, y, w, h = tf.unstack(boxes, axis=1)
        boxes = tf.stack([tf.where(flip, 1.0 - x - w, x), y, w, h], axis=1)
    if shift is not None:
        size = tf.cast(tf.stack([tf.shape(images)[2], tf.shape(images)[1]]), tf.float32)  # (W, H)
        start_px = boxes[:, :2] * size
        end_px = (boxes[:, :2] + boxes[:, 2:]) * size
        # Keep >= 1 pixel of the box inside (new end >= 1, new start <= side - 1); the
        # bounds are rounded inwards so the shift stays a whole number of pixels.
        shift = tf.clip_by_value(shift, tf.math.ceil(1.0 - end_px), tf.math.floor(size - 1.0 - start_px))
        zeros = tf.zeros_like(shift[:, 0])
        transforms = _affine(tf.shape(images)[1], tf.shape(images)[2], shift, zeros, zeros + 1.0)
        images = _warp(images, transforms, "BILINEAR")
        start = tf.clip_by_value((start_px + shift) / size, 0.0, 1.0)
        end = tf.clip_by_value((end_px + shift) / size, 0.0, 1.0)
        boxes = tf.concat([start, end - start], axis=1)
    return images, boxes


def map_seeded(ds: tf.data.Dataset, fn: Callable[..., Any], seed: int) -> tf.data.Dataset:
    """``ds.map(lambda *el: fn(*el, seed))`` with a stateless seed that differs per element
    (batch) and per epoch, and is the same for the same ``seed`` on every run.

    Example: ``map_seeded(ds.batch(128), lambda x, y, s: (augment_images(x, p, s), y), 42)``.
    """
    # Dataset.random re-seeds each pass (epoch) deterministically; a plain counter would
    # repeat the same augmentations every epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    zipped = tf.data.Dataset.zip((ds, seeds))

    def call(element: Any, s: tf.Tensor) -> Any:
        if isinstance(element, tuple):
            return fn(*element, s)
        return fn(element, s)

    return zipped.map(call, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
