"""Train the U-Net on the scenes' masks (binary, or one channel per class)."""

from __future__ import annotations

import keras
import numpy as np

from cnnpipe.config import AugmentParams, UnetParams
from cnnpipe.config.depth import check_unet_depth
from cnnpipe.data.augment import augment_with_masks
from cnnpipe.data.masks import class_index_masks
from cnnpipe.data.pipeline import split_dataset
from cnnpipe.data.prepared import ShardedSplit, Split, content_id, examples, image_shape
from cnnpipe.models.losses import DiceCrossentropy
from cnnpipe.models.metrics import DiceScore
from cnnpipe.models.unet import build_unet
from cnnpipe.training.distribute import get_strategy
from cnnpipe.training.fit import FitResult, fingerprint, fit_model
from cnnpipe.training.outputs import TrainOutputs
from cnnpipe.training.precision import precision_policy


def mask_targets(split: Split, n_classes: int, multiclass: bool) -> np.ndarray:
    """(N, H, W, 1) float {0, 1} masks, or (N, H, W, n_classes + 1) one-hot with channel 0 =
    background and channel k + 1 = class k."""
    if not multiclass:
        return split.masks.astype(np.uint8)[..., None].astype(np.float32)
    return np.eye(n_classes + 1, dtype=np.float32)[class_index_masks(split.masks, split.labels)]


def train_unet(
    train: Split | ShardedSplit,
    val: Split | ShardedSplit,
    n_classes: int,
    params: UnetParams,
    augment: AugmentParams,
    seed: int,
    out: TrainOutputs,
    callbacks: tuple[keras.callbacks.Callback, ...] = (),
    strategy: str = "default",
) -> FitResult:
    """``strategy``: ``train.strategy``; the model is built in its scope and trained distributed."""
    fit = params.fit
    check_unet_depth(params.filters, min(image_shape(train)[:2]))  # before Keras' shape error
    dist = get_strategy(strategy)  # first: a multi-worker strategy must precede any TF op
    n_out = n_classes + 1 if params.multiclass else 1

    def aug(x, y, s):
        return augment_with_masks(x, y, augment, s)

    def targets(split: Split) -> np.ndarray:
        return mask_targets(split, n_classes, params.multiclass)

    # Sharded splits (prepare.shard_size > 0) stream from disk, targets made shard by shard.
    train_ds = split_dataset(
        train, targets, batch_size=fit.batch_size, training=True, seed=seed, augment=aug if fit.augment else None
    )
    val_ds = split_dataset(val, targets, batch_size=256, training=False, seed=seed)
    with precision_policy(fit.precision), dist.scope():
        model = build_unet(image_shape(train), params.filters, n_out)
    return fit_model(
        model,
        train_ds,
        val_ds,
        fit=fit,
        loss=DiceCrossentropy(params.dice_weight, params.multiclass),
        metrics=[DiceScore(params.multiclass)],
        steps_per_epoch=fit.steps(examples(train)),
        checkpoint_dir=out.checkpoint_dir,
        history_csv=out.history_csv,
        run_fingerprint=fingerprint("unet", params, augment, seed, content_id(train)),
        callbacks=callbacks,
    )
