"""Training losses: box regression (smooth-L1 + GIoU) and crossentropy + soft Dice.

Both are registered Keras serializables ("cnnpipe>BoxLoss", "cnnpipe>DiceCrossentropy"), so
saved models reload in safe mode. The box IoU and soft Dice math here also serves the metrics
(``cnnpipe.models.metrics``).

Kept rather than Keras' own (measured, tests/test_losses.py):
- ``box_iou_tensor`` vs ``keras.utils.bounding_boxes.compute_iou``: that one is pairwise (M x N,
  where we need the N pairs) and not identical to ours (epsilon 1e-7 vs 1e-6: 22% of 100,000
  random xywh pairs differ, by up to 4e-5), so the tracked metric and the loss would change.
- ``soft_dice`` vs ``keras.losses.Dice``: Keras computes 2I / (S + 1e-7), ours (2I + 1) / (S + 1);
  empty-vs-empty is 1 here and 0 there, so the loss would change.
"""

from __future__ import annotations

import keras
from keras import ops

EPS = 1e-6


def _xywh_to_corners(b):
    x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return x, y, x + w, y + h


def _overlap(true, pred):
    """Intersection, union and enclosing-box area of (x, y, w, h) box pairs."""
    tx1, ty1, tx2, ty2 = _xywh_to_corners(true)
    px1, py1, px2, py2 = _xywh_to_corners(pred)
    iw = ops.maximum(ops.minimum(tx2, px2) - ops.maximum(tx1, px1), 0.0)
    ih = ops.maximum(ops.minimum(ty2, py2) - ops.maximum(ty1, py1), 0.0)
    inter = iw * ih
    area_p = ops.maximum(px2 - px1, 0.0) * ops.maximum(py2 - py1, 0.0)
    union = (tx2 - tx1) * (ty2 - ty1) + area_p - inter
    hull = (ops.maximum(tx2, px2) - ops.minimum(tx1, px1)) * (ops.maximum(ty2, py2) - ops.minimum(ty1, py1))
    return inter, union, hull


def box_iou_tensor(true, pred):
    """IoU of (x, y, w, h) box pairs, elementwise over the batch."""
    inter, union, _ = _overlap(true, pred)
    return inter / (union + EPS)


@keras.saving.register_keras_serializable(package="cnnpipe")
class BoxLoss(keras.losses.Loss):
    """Smooth-L1 on (x, y, w, h) plus (1 - GIoU).

    L1 alone under-weights small boxes; the GIoU term optimises the evaluated quantity
    directly and still gives a gradient when boxes do not overlap.
    """

    def __init__(self, l1_weight: float = 1.0, name: str = "box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.l1_weight = l1_weight

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        diff = ops.abs(y_true - y_pred)
        beta = 0.02  # Huber knee, in canvas fractions (~1 px on 64)
        # Scaled by 1/beta so the L1 part is ~1 per px-scale error, comparable to 1 - GIoU.
        l1 = ops.mean(ops.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta), axis=-1) / beta
        inter, union, hull = _overlap(y_true, y_pred)
        giou = inter / (union + EPS) - (hull - union) / (hull + EPS)
        return self.l1_weight * l1 + (1.0 - giou)

    def get_config(self):
        return {**super().get_config(), "l1_weight": self.l1_weight}


def soft_dice(y_true, y_pred, axis=(1, 2)):
    """Per-image, per-channel soft Dice; empty-vs-empty counts as 1 via the smoothing term."""
    y_true = ops.cast(y_true, y_pred.dtype)
    inter = ops.sum(y_true * y_pred, axis=axis)
    total = ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis)
    return (2.0 * inter + 1.0) / (total + 1.0)


@keras.saving.register_keras_serializable(package="cnnpipe")
class DiceCrossentropy(keras.losses.Loss):
    """Crossentropy + ``dice_weight`` * (1 - soft Dice).

    Binary (one sigmoid channel) or multi-class (softmax channels, one-hot targets).
    Crossentropy gives well-behaved early gradients; Dice targets the overlap that is
    evaluated and is insensitive to the foreground/background imbalance.
    """

    def __init__(self, dice_weight: float = 1.0, multiclass: bool = False, name: str = "dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight
        self.multiclass = multiclass

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.multiclass:
            ce = keras.losses.categorical_crossentropy(y_true, y_pred)
            dice = ops.mean(soft_dice(y_true, y_pred), axis=-1)
        else:
            ce = keras.losses.binary_crossentropy(y_true, y_pred)
            dice = ops.mean(soft_dice(y_true, y_pred), axis=-1)
        return ops.mean(ce, axis=(1, 2)) + self.dice_weight * (1.0 - dice)

    def get_config(self):
        return {**super().get_config(), "dice_weight": self.dice_weight, "multiclass": self.multiclass}
