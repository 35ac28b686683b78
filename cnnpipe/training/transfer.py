"""Transfer learning on a few-label task, three ways, under one recipe:

1. scratch: the same network as the base, randomly initialised, trained on the few labels;
2. feature extraction: pretrained base frozen, only the new head trained;
3. fine-tuning: continue from (2) with the top of the base unfrozen at a lower rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cnnpipe.config import AugmentParams, ClassifierParams, ParamsError, TransferParams
from cnnpipe.data.augment import augment_images
from cnnpipe.data.pipeline import make_dataset
from cnnpipe.data.prepared import Split
from cnnpipe.models.transfer import (
    build_pyramid_model,
    build_transfer_model,
    classifier_features,
    classifier_window,
    load_classifier_weights,
    min_pyramid_side,
    mobilenet_v2_base,
    unfreeze_top,
)
from cnnpipe.taskspec import TRANSFER_VARIANTS
from cnnpipe.training.fit import FitResult, fingerprint, fit_model
from cnnpipe.training.outputs import TrainOutputs
from cnnpipe.training.precision import precision_policy


def few_label_subset(split: Split, per_class: int, n_classes: int, seed: int, what: str) -> Split:
    """``per_class`` examples of every class, drawn with ``seed``; errors if a class has fewer."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(n_classes):
        idx = np.flatnonzero(split.labels == c)
        if len(idx) < per_class:
            raise ParamsError(
                f"transfer: {what} has {len(idx)} examples of class {c}, fewer than the "
                f"label budget of {per_class} per class; lower transfer.labels_per_class/val_per_class"
            )
        picked.append(rng.choice(idx, per_class, replace=False))
    order = np.sort(np.concatenate(picked))
    return Split(images=split.images[order], labels=split.labels[order])


@dataclass(frozen=True)
class TransferResult:
    models: dict[str, keras.Model]
    fits: dict[str, FitResult]
    unfrozen_layers: int


def transfer_model(
    params: TransferParams,
    classifier: keras.Model | None,
    classifier_params: ClassifierParams,
    shape: tuple[int, int, int],
    n_classes: int,
    pretrained: bool,
) -> keras.Model:
    """Base + new head; the base pretrained if ``pretrained``, else the same network at random."""
    if params.backbone == "mobilenet_v2":
        base = mobilenet_v2_base(params.image_size, params.weights if pretrained else None)
        return build_transfer_model(base, shape, n_classes, params.dropout, pretrained=pretrained,
                                    imagenet_input_size=params.image_size)
    cp = classifier_params
    if params.backbone == "classifier" and classifier is None:
        raise ParamsError("transfer.backbone 'classifier' needs the trained classifier model")
    # Scratch is the same network as the pretrained one, so its head window too.
    window = classifier_window(classifier) if classifier is not None else 3
    if params.backbone == "classifier" and pretrained:
        base = classifier_features(cp.filters, cp.convs_per_block, cp.dense, window, channels=shape[-1])
        load_classifier_weights(base, classifier)
    else:
        # From scratch on a few hundred images: ~15 steps an epoch, so BatchNorm must average fast.
        base = classifier_features(cp.filters, cp.convs_per_block, cp.dense, window, channels=shape[-1],
                                   bn_momentum=0.9)
        pretrained = False
    return build_pyramid_model(base, shape, n_classes, params.dropout, params.scales,
                               min_pyramid_side(cp.filters, cp.dense, window), pretrained=pretrained)


def train_transfer(
    train: Split,
    val: Split,
    n_classes: int,
    params: TransferParams,
    augment: AugmentParams,
    seed: int,
    outs: dict[str, TrainOutputs],
    classifier: keras.Model | None,
    classifier_params: ClassifierParams,
) -> TransferResult:
    """Train the three models on the same ``labels_per_class`` examples per class."""
    train = few_label_subset(train, params.labels_per_class, n_classes, seed, "the train split")
    val = few_label_subset(val, params.val_per_class, n_classes, seed + 1, "the validation split")
    fit = params.fit
    aug = (lambda x, y, s: (augment_images(x, augment, s), y)) if fit.augment else None
    val_ds = make_dataset(val.images, val.labels.astype(np.int32), batch_size=256, training=False, seed=seed)
    steps = fit.steps(len(train.images))
    shape = tuple(train.images.shape[1:])
    data_id = (train.images.shape, int(train.labels.sum()), params, augment, seed)

    # One stream read by the three phases in turn, as the published figures were trained. Each
    # fit continues its shuffle, so a run killed in the second or third phase resumes that phase
    # on another batch order (not bit-exact; the first phase and the other stages are).
    train_ds = make_dataset(train.images, train.labels.astype(np.int32), batch_size=fit.batch_size,
                            training=True, seed=seed, augment=aug)

    def run(style: str, model: keras.Model, style_fit, lr: float | None = None) -> FitResult:
        return fit_model(
            model, train_ds, val_ds, fit=style_fit,
            loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"],
            steps_per_epoch=steps, checkpoint_dir=outs[style].checkpoint_dir,
            history_csv=outs[style].history_csv, run_fingerprint=fingerprint("transfer", style, *data_id),
            learning_rate=lr,
        )

    models: dict[str, keras.Model] = {}
    fits: dict[str, FitResult] = {}

    # 1. scratch: the same architecture, nothing pretrained, everything trainable.
    with precision_policy(fit.precision):
        scratch = transfer_model(params, classifier, classifier_params, shape, n_classes, pretrained=False)
    fits["scratch"] = run("scratch", scratch, fit)
    models["scratch"] = fits["scratch"].model

    # 2. feature extraction: frozen pretrained base, new head.
    with precision_policy(fit.precision):
        extractor = transfer_model(params, classifier, classifier_params, shape, n_classes, pretrained=True)
        next(layer for layer in extractor.layers if isinstance(layer, keras.Model)).trainable = False
    fits["feature_extraction"] = run("feature_extraction", extractor, fit)
    models["feature_extraction"] = fits["feature_extraction"].model

    # 3. fine-tuning: start from (2)'s weights, unfreeze the top of the base, lower rate.
    tuned = keras.models.clone_model(extractor)
    tuned.set_weights(extractor.get_weights())
    tuned_base = next(layer for layer in tuned.layers if isinstance(layer, keras.Model))
    unfrozen = unfreeze_top(tuned_base, params.unfreeze_top)
    tune_fit = fit.model_copy(update={"epochs": params.fine_tune_epochs, "warmup_epochs": 0.0})
    fits["fine_tuning"] = run("fine_tuning", tuned, tune_fit, lr=fit.learning_rate * params.fine_tune_lr_factor)
    models["fine_tuning"] = fits["fine_tuning"].model
    return TransferResult(models=models, fits=fits, unfrozen_layers=unfrozen)


def transfer_outputs(models_dir: Path, plots_dir: Path) -> dict[str, TrainOutputs]:
    """Where each of the three models, its curves and its checkpoint go."""
    return {
        style: TrainOutputs(
            model=models_dir / "transfer" / f"{style}.keras",
            history_csv=plots_dir / "history" / f"transfer_{style}.csv",
            checkpoint_dir=models_dir / ".checkpoints" / f"transfer_{style}",
        )
        for style in TRANSFER_VARIANTS
    }
