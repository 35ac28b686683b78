"""Train the localizer: class + box on the scenes, starting from the classifier's backbone."""

from __future__ import annotations

import keras
import numpy as np

from cnnpipe.config import AugmentParams, ClassifierParams, LocalizerParams
from cnnpipe.config.depth import check_backbone_depth
from cnnpipe.data.augment import augment_with_boxes
from cnnpipe.data.pipeline import split_dataset
from cnnpipe.data.prepared import ShardedSplit, Split, content_id, examples, image_shape
from cnnpipe.models.backbone import build_backbone
from cnnpipe.models.localizer import build_localizer
from cnnpipe.models.losses import BoxLoss
from cnnpipe.models.metrics import BoxIoU
from cnnpipe.training.distribute import get_strategy
from cnnpipe.training.fit import FitResult, fingerprint, fit_model
from cnnpipe.training.outputs import TrainOutputs
from cnnpipe.training.precision import precision_policy


def _targets(split: Split) -> dict[str, np.ndarray]:
    return {"class": split.labels.astype(np.int32), "box": split.boxes.astype(np.float32)}


def train_localizer(
    train: Split | ShardedSplit,
    val: Split | ShardedSplit,
    n_classes: int,
    params: LocalizerParams,
    augment: AugmentParams,
    seed: int,
    out: TrainOutputs,
    pretrained: keras.Model | None,
    classifier_params: ClassifierParams,
    callbacks: tuple[keras.callbacks.Callback, ...] = (),
    strategy: str = "default",
) -> FitResult:
    """``pretrained``: the trained classifier (its ``backbone`` is reused), or None for scratch.

    Sharded splits (``prepare.shard_size`` > 0) are streamed from disk, not held in memory.
    ``strategy``: ``train.strategy``; the model is built in its scope and trained distributed.
    """
    fit = params.fit
    check_backbone_depth(classifier_params.filters, min(image_shape(train)[:2]), "localization")
    dist = get_strategy(strategy)  # first: a multi-worker strategy must precede any TF op

    def aug(x, y, s):
        x, box = augment_with_boxes(x, y["box"], augment, s)
        return x, {"class": y["class"], "box": box}

    train_ds = split_dataset(
        train, _targets, batch_size=fit.batch_size, training=True, seed=seed,
        augment=aug if fit.augment else None,
    )
    val_ds = split_dataset(val, _targets, batch_size=256, training=False, seed=seed)
    with precision_policy(fit.precision), dist.scope():
        if pretrained is not None:
            backbone = pretrained.get_layer("backbone")
            if strategy != "default":  # its variables must live in the strategy's scope
                source, backbone = backbone, keras.models.clone_model(backbone)
                backbone.set_weights(source.get_weights())
        else:
            backbone = build_backbone(classifier_params.filters, classifier_params.convs_per_block)
        model = build_localizer(backbone, image_shape(train), n_classes, params.dropout)
    return fit_model(
        model,
        train_ds,
        val_ds,
        fit=fit,
        loss={"class": keras.losses.SparseCategoricalCrossentropy(), "box": BoxLoss()},
        loss_weights={"class": 1.0, "box": params.box_loss_weight},
        metrics={"class": ["accuracy"], "box": [BoxIoU()]},
        steps_per_epoch=fit.steps(examples(train)),
        checkpoint_dir=out.checkpoint_dir,
        history_csv=out.history_csv,
        run_fingerprint=fingerprint(
            "localizer", params, augment, seed, content_id(train), pretrained is not None
        ),
        callbacks=callbacks,
    )
