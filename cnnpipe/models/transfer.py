"""Transfer learning: a pretrained base under a new head, frozen or partly unfrozen.

Two kinds of base: this pipeline's own classifier (always available, offline), run fully
convolutionally over an image pyramid, or a ``keras.applications`` network (MobileNetV2)
with ImageNet weights, a local weights file, or none. keras-io's "Transfer learning & fine-tuning" guide is the model here: the
base is always called with ``training=False`` so its BatchNorm layers stay in inference
mode, also after unfreezing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from cnnpipe.config import ParamsError
from cnnpipe.errors import ModelError
from cnnpipe.models.backbone import build_backbone

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


def classifier_features(
    filters: Sequence[int],
    convs_per_block: int,
    dense: int,
    window: int = 3,
    channels: int = 1,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """The classifier without its softmax, as a fully convolutional feature extractor.

    The classifier's head (pool 2x2 -> flatten -> dense -> BatchNorm -> ReLU) equals a
    dilated ``window`` x ``window`` convolution over a stride-1 pooled map (OverFeat's
    trick; ``window`` is the pooled map's side on the classifier's own input: 3 for 28 px,
    see ``classifier_window``). So its hidden layer - the most class-specific features the
    classifier learned - slides over a larger scene, evaluated every 4 input pixels (3
    blocks) instead of once per 28x28 item. With ``dense`` 0
    (a global-average-pool classifier) the features are the backbone's last map. The
    layers form one flat chain, so fine-tuning can unfreeze its top layers one by one.
    """
    backbone = build_backbone(filters, convs_per_block, channels=channels, bn_momentum=bn_momentum)
    inputs = keras.Input((None, None, channels), name="features_input")
    x = inputs
    for layer in backbone.layers[1:]:
        x = layer(x)
    if dense:
        x = layers.MaxPooling2D(2, strides=1, name="head_pool")(x)
        x = layers.Conv2D(dense, window, dilation_rate=2, use_bias=False, name="hidden")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name="hidden_bn")(x)
        x = layers.ReLU(name="hidden_relu")(x)
    return keras.Model(inputs, x, name="features")


def classifier_window(classifier: keras.Model) -> int:
    """The side of the map the classifier's hidden layer flattens (3 for 28 px inputs)."""
    try:
        kernel = classifier.get_layer("hidden").kernel
    except ValueError:
        return 1  # a global-average-pool head: no window
    channels = classifier.get_layer("backbone").output.shape[-1]
    window = math.isqrt(kernel.shape[0] // channels)
    if window * window * channels != kernel.shape[0]:
        raise ModelError(
            f"the classifier's hidden layer takes {kernel.shape[0]} inputs: not a square map of {channels} channels"
        )
    return window


def load_classifier_weights(features: keras.Model, classifier: keras.Model) -> None:
    """Copy a trained classifier (cnnpipe.models.classifier) into ``classifier_features``."""
    source = {layer.name: layer for layer in classifier.get_layer("backbone").layers}
    source.update({layer.name: layer for layer in classifier.layers})
    for layer in features.layers:
        if not layer.weights:
            continue
        if layer.name not in source:
            raise ModelError(
                f"the classifier has no layer {layer.name!r}: was it built with the same train_classifier params?"
            )
        weights = source[layer.name].get_weights()
        if layer.name == "hidden":  # Dense (k*k*C, units) -> Conv2D (k, k, C, units): Flatten is (h, w, c) order
            weights = [weights[0].reshape(layer.kernel.shape)]
        layer.set_weights(weights)


def min_pyramid_side(filters: Sequence[int], dense: int, window: int = 3) -> int:
    """The smallest input side ``classifier_features`` maps to at least one position."""
    stride = 2 ** (len(filters) - 1)
    return stride * (2 * window if dense else 1)


def build_pyramid_model(
    base: keras.Model,
    input_shape: tuple[int, int, int],
    n_classes: int,
    dropout: float,
    scales: Sequence[float],
    min_side: int,
    *,
    head_units: int = 64,
    pretrained: bool = True,
) -> keras.Model:
    """New head on a fully convolutional ``base`` applied at several scales of the input.

    A scene's item may be smaller or larger than the 28x28 items the classifier learned;
    resizing the scene by each of ``scales`` shows the base the item near its own size at
    one of them. Per position: BatchNorm -> 1x1 conv (``head_units``, ReLU); per scale a max
    pool over positions (the item is wherever it responds most); the scales concatenated
    -> dropout -> softmax. One base, shared by every scale; a pretrained one runs with
    ``training=False``.
    """
    h, w = input_shape[:2]
    inputs = keras.Input(input_shape, name="image")
    # The new head's first layer works at every position, before pooling: a learned 1x1
    # detector over the (normalized) base features, shared by the scales, picks out the
    # feature combinations of the new task's item and ignores clutter that resembles it.
    norm = layers.BatchNormalization(momentum=0.9, name="head_bn")
    detect = layers.Conv2D(head_units, 1, activation="relu", name="head_detect")
    pooled = []
    for i, scale in enumerate(scales):
        size = (round(h * scale), round(w * scale))
        if min(size) < min_side:
            raise ParamsError(
                f"transfer.scales: {scale} turns the {h}x{w} input into {size[0]}x{size[1]}, smaller "
                f"than the {min_side} pixels the base needs; use scales >= {min_side / min(h, w):.2f}"
            )
        x = inputs if size == (h, w) else layers.Resizing(*size, antialias=True, name=f"scale{i}")(inputs)
        x = base(x, training=False) if pretrained else base(x)
        pooled.append(layers.GlobalMaxPooling2D(name=f"scale{i}_max")(detect(norm(x))))
    x = layers.Concatenate(name="pool")(pooled) if len(pooled) > 1 else pooled[0]
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="transfer")


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
