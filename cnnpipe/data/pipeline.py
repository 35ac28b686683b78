"""tf.data input pipelines: in-memory arrays or streamed shards -> shuffled, augmented, batched,
prefetched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from cnnpipe.data.augment import map_seeded
from cnnpipe.data.images import to_model_input
from cnnpipe.data.prepared import ShardedSplit, Split

AUTOTUNE = tf.data.AUTOTUNE


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
    return _finish(ds, batch_size=batch_size, training=training, seed=seed, augment=augment)


def _finish(
    ds: tf.data.Dataset, *, batch_size: int, training: bool, seed: int, augment: Callable[..., Any] | None
) -> tf.data.Dataset:
    """Examples -> float batches, augmented at train time, prefetched."""
    ds = ds.batch(batch_size, drop_remainder=training)
    ds = ds.map(lambda x, y: (to_model_input(x), y), num_parallel_calls=AUTOTUNE)
    if training and augment is not None:
        ds = map_seeded(ds, augment, seed)
    return ds.prefetch(AUTOTUNE)


# Shards read at once by the streaming pipeline: with the shuffle buffer (one shard) and the
# prefetched batches, about three shards are in memory whatever the number of shards.
SHARD_CYCLE = 2


def make_sharded_dataset(
    shards: ShardedSplit,
    targets: Callable[[Split], Any],
    *,
    batch_size: int,
    training: bool,
    seed: int,
    augment: Callable[..., Any] | None = None,
) -> tf.data.Dataset:
    """Like :func:`make_dataset`, streaming ``shards`` from disk instead of holding the split.

    At train time the shard order is reshuffled each epoch (seeded), ``SHARD_CYCLE`` shards
    are read interleaved, and a one-shard shuffle buffer mixes their examples. ``targets``
    maps a loaded shard to its targets (array or dict), as for the in-memory pipeline.
    """
    first = shards.load(0)
    spec = lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))  # noqa: E731
    signature = (spec(first.images), tf.nest.map_structure(spec, targets(first)))
    del first

    def read(index: Any) -> Any:
        part = shards.load(int(index))
        yield part.images, targets(part)

    order = tf.data.Dataset.range(len(shards.sizes))
    if training:
        order = order.shuffle(len(shards.sizes), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = order.interleave(
        lambda index: tf.data.Dataset.from_generator(read, args=(index,), output_signature=signature).unbatch(),
        cycle_length=SHARD_CYCLE,
        block_length=1,
        num_parallel_calls=SHARD_CYCLE,  # read the next shard while the current one trains
        deterministic=True,
    )
    if training:
        ds = ds.shuffle(max(shards.sizes), seed=seed, reshuffle_each_iteration=True)
    else:  # a generator's length is unknown to tf.data; Keras then warns at the end of each pass
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(shards)))
    return _finish(ds, batch_size=batch_size, training=training, seed=seed, augment=augment)


def split_dataset(
    split: Split | ShardedSplit,
    targets: Callable[[Split], Any],
    *,
    batch_size: int,
    training: bool,
    seed: int,
    augment: Callable[..., Any] | None = None,
) -> tf.data.Dataset:
    """The input pipeline of a split: streamed when it is sharded, in memory otherwise."""
    if isinstance(split, ShardedSplit):
        return make_sharded_dataset(
            split, targets, batch_size=batch_size, training=training, seed=seed, augment=augment
        )
    return make_dataset(
        split.images, targets(split), batch_size=batch_size, training=training, seed=seed, augment=augment
    )
