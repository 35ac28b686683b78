"""Transfer learning: a pretrained base under a new head, frozen or partly unfrozen.

Two kinds of base: this pipeline's own classifier backbone (always available, offline)
or a ``keras.applications`` network (MobileNetV2) with ImageNet weights, a local weights
file, or none. keras-io's "Transfer learning & fine-tuning" guide is the model here: the
base is always called with ``training=False`` so its BatchNorm layers stay in inference
mode, also after unfreezing.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from cnnpipe.errors import ModelError

# The file keras.applications fetches for MobileNetV2 without its top, per input size.
MOBILENET_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5"
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


@keras.saving.register_keras_serializable(package="cnnpipe")
class GrayToRGB(layers.Layer):
    """Repeat a single channel three times (ImageNet bases expect RGB); a safe, named layer
    instead of a Lambda so the saved model loads with safe_mode on."""

    def call(self, x):
        return keras.ops.repeat(x, 3, axis=-1)


def mobilenet_v2_base(image_size: int, weights: str | None) -> keras.Model:
    """MobileNetV2 without its top. ``weights``: "imagenet", a weights-file path, or None."""
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ModelError(f"transfer.weights: {weights!r} is neither 'imagenet', null, nor an existing weights file")
    if weights == "imagenet" and image_size not in MOBILENET_V2_SIZES:
        raise ModelError(
            f"transfer.image_size {image_size}: ImageNet weights exist for sizes {MOBILENET_V2_SIZES} only"
        )
    try:
        return keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), include_top=False, weights=weights
        )
    except Exception as err:
        if weights != "imagenet":
            raise ModelError(f"could not load MobileNetV2 weights from {weights!r}: {err}") from err
        name = MOBILENET_V2_FILE.format(size=image_size)
        raise ModelError(
            "could not download the ImageNet weights for MobileNetV2 "
            f"({type(err).__name__}: {err}). This machine may have no internet. Either copy "
            f"{name} (from a connected machine's ~/.keras/models/) into ~/.keras/models/ here, "
            "or set transfer.weights to the path of a local weights file, or to null to train "
            "without pretrained weights, or use transfer.backbone: classifier (offline)."
        ) from err


def build_transfer_model(
    base: keras.Model,
    input_shape: tuple[int, int, int],
    n_classes: int,
    dropout: float,
    *,
    pretrained: bool = True,
    imagenet_input_size: int | None = None,
) -> keras.Model:
    """New head on ``base``: average + max pool -> BatchNorm -> dropout -> softmax.

    A pretrained base is called with ``training=False`` (its BatchNorm keeps the statistics
    it learned, frozen or not); a from-scratch base trains normally. Max pooling finds a
    small item anywhere in a cluttered scene, where the average alone is mostly background;
    the BatchNorm puts the frozen features on a scale a new linear layer learns quickly.
    For ImageNet bases (``imagenet_input_size`` set) the grayscale [0, 1] input is resized,
    repeated to RGB and scaled to [-1, 1] (MobileNetV2's preprocessing) inside the model,
    so callers always feed the task's own images.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if imagenet_input_size is not None:
        x = layers.Resizing(imagenet_input_size, imagenet_input_size, name="resize")(x)
        x = GrayToRGB(name="to_rgb")(x)
        x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(x)
    x = base(x, training=False) if pretrained else base(x)
    x = layers.Concatenate(name="pool")(
        [layers.GlobalAveragePooling2D(name="avg_pool")(x), layers.GlobalMaxPooling2D(name="max_pool")(x)]
    )
    # Few labels, few steps: a fast-moving average so inference statistics are current.
    x = layers.BatchNormalization(momentum=0.9, name="head_bn")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="transfer")


def unfreeze_top(base: keras.Model, n_layers: int) -> int:
    """Make the top ``n_layers`` weight-carrying layers of ``base`` trainable; returns how many.

    BatchNorm layers stay frozen (their statistics would drift on a few hundred images).
    """
    base.trainable = True
    weighted = [layer for layer in base.layers if layer.weights]
    for layer in weighted:
        layer.trainable = False
    unfrozen = 0
    for layer in reversed(weighted):
        if unfrozen >= n_layers:
            break
        if isinstance(layer, layers.BatchNormalization):
            continue
        layer.trainable = True
        unfrozen += 1
    return unfrozen
