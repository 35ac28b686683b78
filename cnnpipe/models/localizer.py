"""Localizer: a shared backbone with a class head (softmax) and a box head (x, y, w, h)."""

from __future__ import annotations

import keras
from keras import layers

from cnnpipe.models.backbone import conv_bn_relu


def build_localizer(
    backbone: keras.Model,
    input_shape: tuple[int, int, int],
    n_classes: int,
    dropout: float,
) -> keras.Model:
    """Outputs ``{"class": (N, n_classes) softmax, "box": (N, 4) sigmoid (x, y, w, h)}``.

    The class head pools globally (what the item is does not depend on where it is).
    The box head must know *where*, so it keeps the spatial grid: one more strided conv,
    then a flatten, so each position has its own weights (global pooling would discard
    exactly the information a box needs).
    """
    inputs = keras.Input(input_shape, name="image")
    features = backbone(inputs)

    # --- class head
    c = layers.GlobalAveragePooling2D(name="class_pool")(features)
    c = layers.Dropout(dropout, name="class_dropout")(c)
    class_out = layers.Dense(n_classes, activation="softmax", name="class")(c)

    # --- box head
    b = conv_bn_relu(features, 64, name="box_reduce", strides=2)
    b = layers.Flatten(name="box_flatten")(b)
    b = layers.Dense(256, activation="relu", name="box_dense")(b)
    box_out = layers.Dense(4, activation="sigmoid", name="box")(b)
    return keras.Model(inputs, {"class": class_out, "box": box_out}, name="localizer")
