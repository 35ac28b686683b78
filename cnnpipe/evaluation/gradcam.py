"""Class-activation heatmaps of a classifier: where in the image the predicted class's evidence is.

The method is HiResCAM (Draelos & Carin, 2020): the element-wise product of the last conv
feature map and the gradient of the class score with respect to it, summed over channels,
keeping positive evidence (ReLU). Why not the Grad-CAM of Selvaraju et al. (2017), which
first averages each channel's gradient over the map:

- Our default head (``train_classifier.dense > 0``) is max-pool -> flatten -> dense, so each
  position has its own gradient. Averaging it lets positive and negative positions cancel:
  on the default classifier 112 of the first 256 test images got channel weights whose
  weighted sum was negative everywhere, an all-zero map after the ReLU (6 of 8 panels of the
  figure blank). HiResCAM keeps each position's own gradient, so a position that raised the
  class score shows up; its map is the score's first-order decomposition over positions, and
  with a global-average-pool head (uniform gradient) it equals Grad-CAM.
  Measured on a small classifier of this architecture trained on the tests' silhouettes
  (256 test images): Grad-CAM left 28 maps all zero under mixed bfloat16 and 46 under
  float32, HiResCAM none under either; with the pooled head neither method left any.
- So bfloat16 is not what blanked the maps, but it costs precision (8 bits of mantissa) in
  a map summed from many small products: the features are cast to float32 and the gradient
  is taken with respect to that cast, so the map is computed in float32 whatever the
  training precision.

Maps are normalized per image to a peak of 1. A map with no positive evidence at all stays
zero rather than dividing by zero; :func:`zero_maps` counts them (tests keep it at 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def gradcam(
    model: Any,
    images: np.ndarray,
    class_index: int | Sequence[int] | None = None,
    backbone: str = "backbone",
) -> np.ndarray:
    """Class-activation heatmaps (HiResCAM, see the module) ``(N, H, W)`` in [0, 1] at the input's
    resolution.

    ``model`` is a functional classifier whose layer ``backbone`` is a nested model giving the
    last conv feature map, followed by a linear chain of layers to the softmax. The class is
    the predicted one (``None``), one index for all images, or one index per image.
    """
    # Imported here so that drawing the other figures does not pay TensorFlow's start-up.
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:  # TF's conv kernels reject an empty batch
        return np.zeros(images.shape[:3], dtype=np.float32)
    x = tf.convert_to_tensor(images)
    base = model.get_layer(backbone)
    chain = model.layers[model.layers.index(base) + 1:]
    # float32 whatever the policy: the map is summed from many small products (see the module).
    feats = tf.cast(base(x, training=False), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(feats)
        h = feats
        for layer in chain[:-1]:
            h = layer(h, training=False)
        scores = tf.cast(_class_scores(chain[-1], h) if chain else h, tf.float32)
        if class_index is None:
            target = tf.argmax(scores, axis=-1, output_type=tf.int32)
        else:
            target = tf.broadcast_to(tf.constant(class_index, dtype=tf.int32), [tf.shape(x)[0]])
        chosen = tf.gather(scores, target, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(chosen, feats), tf.float32)
    cam = tf.nn.relu(tf.reduce_sum(grads * feats, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, tf.shape(x)[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    cam = np.divide(cam, peak[:, None, None], out=np.zeros_like(cam), where=peak[:, None, None] > 0)
    return np.clip(cam, 0.0, 1.0)


def zero_maps(maps: np.ndarray) -> int:
    """How many maps show no heat at all (every pixel 0)."""
    maps = np.asarray(maps)
    return int(np.sum(maps.reshape(len(maps), -1).max(axis=1, initial=0.0) <= 0.0))


def _class_scores(last: Any, h: Any) -> Any:
    """The last layer's output, taken before the softmax when the layer is a softmax Dense.

    CAMs want class scores before normalization: a confident softmax saturates and its
    gradients vanish, which would blank the heatmap of exactly the best-classified images.
    """
    import keras

    if isinstance(last, keras.layers.Dense) and getattr(last.activation, "__name__", "") == "softmax":
        return keras.ops.matmul(h, last.kernel) + (last.bias if last.use_bias else 0.0)
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax"
    ):
        return h
    return last(h, training=False)
