"""Localizer: a shared backbone with a class head (softmax) and a box head (x, y, w, h).

The box head is dense, not global: at every cell of the feature grid it predicts the
distances from that cell's centre to the four box edges, plus a score saying how much that
cell should be trusted; the box is the score-weighted (softmax) average of the per-cell
boxes. Every cell regresses relative to its own position, so the head is translation
equivariant and precise to a fraction of a pixel, where a flatten + dense regressor must
learn every position separately. The whole thing is differentiable, trained end to end
with a box loss on the final (x, y, w, h). The same attention weights pool the features
for the class head, so clutter elsewhere in the scene weighs little.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from cnnpipe.models.backbone import conv_bn_relu


@keras.saving.register_keras_serializable(package="cnnpipe")
class AddCoords(layers.Layer):
    """Append two channels holding each cell's centre (x, y) as fractions of the image."""

    def call(self, x):
        shape = ops.shape(x)
        h, w = shape[1], shape[2]
        ys = (ops.cast(ops.arange(h), x.dtype) + 0.5) / ops.cast(h, x.dtype)
        xs = (ops.cast(ops.arange(w), x.dtype) + 0.5) / ops.cast(w, x.dtype)
        grid_y = ops.broadcast_to(ops.reshape(ys, (1, -1, 1, 1)), (shape[0], h, w, 1))
        grid_x = ops.broadcast_to(ops.reshape(xs, (1, 1, -1, 1)), (shape[0], h, w, 1))
        return ops.concatenate([x, grid_x, grid_y], axis=-1)


@keras.saving.register_keras_serializable(package="cnnpipe")
class BoxFromCells(layers.Layer):
    """Per-cell edge distances (B, H, W, 4) + cell scores (B, H, W, 1) -> box (B, 4) and the
    attention weights (B, H, W, 1). Distances are (left, top, right, bottom), >= 0."""

    def call(self, distances, scores):
        shape = ops.shape(scores)
        h, w = shape[1], shape[2]
        weights = ops.softmax(ops.reshape(scores, (shape[0], h * w)), axis=-1)
        weights = ops.reshape(weights, (shape[0], h, w, 1))
        ys = (ops.cast(ops.arange(h), scores.dtype) + 0.5) / ops.cast(h, scores.dtype)
        xs = (ops.cast(ops.arange(w), scores.dtype) + 0.5) / ops.cast(w, scores.dtype)
        cy = ops.reshape(ys, (1, -1, 1))
        cx = ops.reshape(xs, (1, 1, -1))
        x1 = cx - distances[..., 0]
        y1 = cy - distances[..., 1]
        x2 = cx + distances[..., 2]
        y2 = cy + distances[..., 3]
        corners = ops.stack([x1, y1, x2, y2], axis=-1) * weights
        x1, y1, x2, y2 = ops.unstack(ops.sum(corners, axis=(1, 2)), 4, axis=-1)
        box = ops.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
        return box, weights


def build_localizer(
    backbone: keras.Model,
    input_shape: tuple[int, int, int],
    n_classes: int,
    dropout: float,
    head_width: int = 64,
) -> keras.Model:
    """Outputs ``{"class": (N, n_classes) softmax, "box": (N, 4) (x, y, w, h) fractions}``."""
    inputs = keras.Input(input_shape, name="image")
    features = backbone(inputs)

    # --- box head: widen the receptive field (dilated convs) so a cell sees the far edges
    b = AddCoords(name="coords")(features)
    b = conv_bn_relu(b, head_width, name="box_1")
    for i, rate in enumerate((2, 4), start=2):
        b = layers.Conv2D(head_width, 3, padding="same", dilation_rate=rate, use_bias=False, name=f"box_{i}_conv")(b)
        b = layers.BatchNormalization(name=f"box_{i}_bn")(b)
        b = layers.ReLU(name=f"box_{i}_relu")(b)
    # Start every cell at a 32 px box around itself: softplus(-1.26) = 0.25 of the canvas per side.
    distances = layers.Conv2D(
        4, 1, activation="softplus", bias_initializer=keras.initializers.Constant(-1.26), dtype="float32",
        name="box_distances",
    )(b)
    scores = layers.Conv2D(1, 1, dtype="float32", name="box_scores")(b)
    box, weights = BoxFromCells(dtype="float32", name="box_pool")(distances, scores)
    box = layers.Identity(dtype="float32", name="box")(box)

    # --- class head: attention-pooled (the item) and globally pooled (context) features
    attended = layers.Dot(axes=(1, 1), dtype="float32", name="class_attend")(
        [layers.Reshape((-1, 1), name="weights_flat")(weights),
         layers.Reshape((-1, features.shape[-1]), name="features_flat")(features)]
    )
    c = layers.Concatenate(name="class_features")(
        [layers.Flatten(name="class_attended")(attended), layers.GlobalAveragePooling2D(name="class_pool")(features)]
    )
    c = layers.Dropout(dropout, name="class_dropout")(c)
    class_out = layers.Dense(n_classes, activation="softmax", dtype="float32", name="class")(c)
    return keras.Model(inputs, {"class": class_out, "box": box}, name="localizer")
