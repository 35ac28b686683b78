"""CNN classifier: the shared backbone plus a pooled softmax head."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from cnnpipe.models.backbone import build_backbone


def build_classifier(
    input_shape: tuple[int, int, int],
    n_classes: int,
    filters: Sequence[int],
    convs_per_block: int,
    dropout: float,
    dense: int = 0,
) -> keras.Model:
    """Backbone -> head -> softmax.

    ``dense == 0``: global average pooling, the smallest head. ``dense > 0``: pool once more,
    flatten and a hidden layer of that width: on small images *where* a feature sits matters
    (a collar, a sleeve end), and this head keeps it for a fraction of the backbone's FLOPs.
    The backbone is a nested model named ``backbone`` so the transfer, localizer and
    Grad-CAM code can take it out whole; the layers after it form a linear chain.
    """
    backbone = build_backbone(filters, convs_per_block, channels=input_shape[-1])
    inputs = keras.Input(input_shape, name="image")
    x = backbone(inputs)
    if dense:
        x = layers.MaxPooling2D(name="head_pool")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dropout(dropout, name="head_dropout")(x)
        x = layers.Dense(dense, use_bias=False, name="hidden")(x)
        x = layers.BatchNormalization(name="hidden_bn")(x)
        x = layers.ReLU(name="hidden_relu")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="classifier")
