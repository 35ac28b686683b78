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
) -> keras.Model:
    """Backbone -> global average pool -> dropout -> softmax.

    The backbone is a nested model named ``backbone`` so the transfer, localizer and
    Grad-CAM code can take it out whole; the layers after it form a linear chain.
    """
    backbone = build_backbone(filters, convs_per_block, channels=input_shape[-1])
    inputs = keras.Input(input_shape, name="image")
    x = backbone(inputs)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="classifier")
