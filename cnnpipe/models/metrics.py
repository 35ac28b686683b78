"""Metrics tracked during training: mean box IoU (localizer) and mean hard Dice (U-Net).

Registered Keras serializables ("cnnpipe>BoxIoU", "cnnpipe>DiceScore": the names saved models
hold), so models compiled with them reload in safe mode.
"""

from __future__ import annotations

import keras
from keras import ops

from cnnpipe.models.losses import box_iou_tensor, soft_dice


@keras.saving.register_keras_serializable(package="cnnpipe")
class BoxIoU(keras.metrics.Mean):
    """Mean IoU between true and predicted (x, y, w, h) boxes: the localizer's tracked metric."""

    def __init__(self, name: str = "iou", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(box_iou_tensor(ops.cast(y_true, y_pred.dtype), y_pred), sample_weight)


@keras.saving.register_keras_serializable(package="cnnpipe")
class DiceScore(keras.metrics.Mean):
    """Mean hard Dice of the foreground (threshold 0.5 / argmax), tracked during training."""

    def __init__(self, multiclass: bool = False, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.multiclass = multiclass

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.multiclass:
            true_fg = 1.0 - y_true[..., 0]
            pred_fg = ops.cast(ops.argmax(y_pred, axis=-1) > 0, y_pred.dtype)
        else:
            true_fg = y_true[..., 0]
            pred_fg = ops.cast(y_pred[..., 0] > 0.5, y_pred.dtype)
        return super().update_state(soft_dice(true_fg[..., None], pred_fg[..., None])[:, 0], sample_weight)

    def get_config(self):
        return {**super().get_config(), "multiclass": self.multiclass}
