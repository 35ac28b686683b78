"""Train the from-scratch CNN classifier."""

from __future__ import annotations

import keras
import numpy as np

from cnnpipe.config import AugmentParams, ClassifierParams
from cnnpipe.config.depth import check_backbone_depth
from cnnpipe.data.augment import augment_images
from cnnpipe.data.pipeline import make_dataset
from cnnpipe.data.prepared import Split
from cnnpipe.models.classifier import build_classifier
from cnnpipe.training.distribute import get_strategy
from cnnpipe.training.fit import FitResult, fingerprint, fit_model
from cnnpipe.training.outputs import TrainOutputs
from cnnpipe.training.precision import precision_policy


def train_classifier(
    train: Split,
    val: Split,
    n_classes: int,
    params: ClassifierParams,
    augment: AugmentParams,
    seed: int,
    out: TrainOutputs,
    callbacks: tuple[keras.callbacks.Callback, ...] = (),
    strategy: str = "default",
) -> FitResult:
    """Fit the classifier on one-hot, label-smoothed targets; returns the best-epoch model.

    ``strategy``: ``train.strategy``; the model is built in its scope and trained distributed.
    """
    fit = params.fit
    check_backbone_depth(params.filters, min(train.images.shape[1:3]), "classification", extra_pool=params.dense > 0)
    dist = get_strategy(strategy)  # first: a multi-worker strategy must precede any TF op
    one_hot = lambda y: np.eye(n_classes, dtype=np.float32)[y]
    aug = (lambda x, y, s: (augment_images(x, augment, s), y)) if fit.augment else None
    train_ds = make_dataset(
        train.images, one_hot(train.labels), batch_size=fit.batch_size, training=True, seed=seed, augment=aug
    )
    val_ds = make_dataset(val.images, one_hot(val.labels), batch_size=512, training=False, seed=seed)
    with precision_policy(fit.precision), dist.scope():
        model = build_classifier(
            tuple(train.images.shape[1:]), n_classes, params.filters, params.convs_per_block, params.dropout,
            params.dense,
        )
    return fit_model(
        model,
        train_ds,
        val_ds,
        fit=fit,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
        steps_per_epoch=fit.steps(len(train.images)),
        checkpoint_dir=out.checkpoint_dir,
        history_csv=out.history_csv,
        run_fingerprint=fingerprint("classifier", params, augment, seed, train.images.shape, int(train.labels.sum())),
        callbacks=callbacks,
    )
