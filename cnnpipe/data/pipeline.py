"""tf.data input pipelines: in-memory arrays -> shuffled, augmented, batched, prefetched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from cnnpipe.data.augment import map_seeded

AUTOTUNE = tf.data.AUTOTUNE


def to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 scenes -> float32 in [0, 1]; float inputs pass through."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def make_dataset(
    inputs: np.ndarray,
    targets: Any,
    *,
    batch_size: int,
    training: bool,
    seed: int,
    augment: Callable[..., Any] | None = None,
) -> tf.data.Dataset:
    """Batches of ``(float images, targets)``.

    ``targets`` is an array or a dict of arrays (multi-output models). At train time the
    data is reshuffled each epoch (seeded) and ``augment(images, targets) -> (images,
    targets)`` runs on whole batches, which is much cheaper than per example on CPU.
    Batching happens before the uint8 -> float cast so the cached tensors stay small.
    ``augment(images, targets, seed)`` gets a per-batch stateless seed (reproducible).
    """
    ds = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if training:
        ds = ds.shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=training)
    ds = ds.map(lambda x, y: (to_float(x), y), num_parallel_calls=AUTOTUNE)
    if training and augment is not None:
        ds = map_seeded(ds, augment, seed)
    return ds.prefetch(AUTOTUNE)
