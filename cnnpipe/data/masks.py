"""The two mask conventions training, evaluation and serving share, written once.

- The multiclass ground truth: background 0, class k -> k + 1 inside an item's mask.
- The decision on a U-Net's output: one sigmoid channel -> ``p >= 0.5``; several softmax
  channels -> the largest (channel 0 is the background).
"""

from __future__ import annotations

import numpy as np


def class_index_masks(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W)`` label maps ``mask * (label + 1)``: 0 background, k + 1 for class k.

    ``masks`` are {0, 1} item masks, ``labels`` one class per item. Own class-id masks (labels
    all 0) come out unchanged.
    """
    return np.asarray(masks).astype(np.uint8) * (np.asarray(labels).astype(np.uint8)[:, None, None] + 1)


def decide_mask(probs: np.ndarray) -> np.ndarray:
    """Label maps ``(..., H, W)`` of U-Net outputs ``(..., H, W, C)``: for ``C == 1`` (sigmoid)
    bool ``p >= 0.5``; for ``C > 1`` (softmax) the argmax channel, int64."""
    probs = np.asarray(probs)
    return (probs[..., 0] >= 0.5) if probs.shape[-1] == 1 else np.argmax(probs, axis=-1)
