"""Evaluation math in plain numpy: box conversions and IoU, mask Dice/IoU, classification reports.

Conventions, fixed here once:

- Boxes are ``(x, y, w, h)``: top-left corner, width, height, in any consistent unit
  (the pipeline uses fractions of the canvas). A negative width or height counts as zero.
- Per-image mask scores take ``(N, ...)`` arrays (everything after the first axis is one
  image) and return ``(N,)``. When prediction and truth are **both empty**, Dice and IoU are
  **1.0** (nothing to find, nothing found: a perfect answer); when only one is empty they are 0.
- Every fraction returned is in ``[0, 1]``; a zero denominator gives 0.0 unless stated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` boxes ``(x, y, w, h)`` -> ``(x1, y1, x2, y2)``."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` boxes ``(x1, y1, x2, y2)`` -> ``(x, y, w, h)``."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired ``(x, y, w, h)`` boxes ``a[i]`` and ``b[i]``: ``(N, 4), (N, 4) -> (N,)``.

    Disjoint boxes, and pairs whose union has zero area, score 0.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape or a.shape[-1] != 4:
        raise ValueError(f"box_iou needs two (N, 4) arrays of equal shape, got {a.shape} and {b.shape}")
    # A regressor can emit negative sides; they describe no area, not a flipped box.
    a = np.concatenate([a[:, :2], np.maximum(a[:, 2:], 0.0)], axis=1)
    b = np.concatenate([b[:, :2], np.maximum(b[:, 2:], 0.0)], axis=1)
    ax, bx = xywh_to_xyxy(a), xywh_to_xyxy(b)
    inter_w = np.clip(np.minimum(ax[:, 2], bx[:, 2]) - np.maximum(ax[:, 0], bx[:, 0]), 0.0, None)
    inter_h = np.clip(np.minimum(ax[:, 3], bx[:, 3]) - np.maximum(ax[:, 1], bx[:, 1]), 0.0, None)
    inter = inter_w * inter_h
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return _safe_divide(inter, union)


# --------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------


def _flat_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim < 2:
        raise ValueError(f"need two (N, ...) masks of equal shape, got {pred.shape} and {true.shape}")
    n = pred.shape[0]
    return pred.reshape(n, -1) != 0, true.reshape(n, -1) != 0


def _counts(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image intersection, |pred| and |true| of binary masks (nonzero = foreground)."""
    p, t = _flat_pair(pred, true)
    return (p & t).sum(axis=1), p.sum(axis=1), t.sum(axis=1)


def _safe_divide(num: np.ndarray, den: np.ndarray, empty: float = 0.0) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def mask_dice(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image Dice ``2|P∩T| / (|P|+|T|)`` of binary masks ``(N, ...)``; both empty -> 1.0."""
    inter, p, t = _counts(pred, true)
    return _safe_divide(2.0 * inter, p + t, empty=1.0)


def mask_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image IoU ``|P∩T| / |P∪T|`` of binary masks ``(N, ...)``; both empty -> 1.0."""
    inter, p, t = _counts(pred, true)
    return _safe_divide(inter, p + t - inter, empty=1.0)


def pixel_accuracy(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image share of pixels whose label agrees: ``(N, ...)`` label maps -> ``(N,)``."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim < 2:
        raise ValueError(f"need two (N, ...) label maps of equal shape, got {pred.shape} and {true.shape}")
    n = pred.shape[0]
    return (pred.reshape(n, -1) == true.reshape(n, -1)).mean(axis=1, dtype=np.float64)


def per_class_dice_iou(
    pred_labels: np.ndarray, true_labels: np.ndarray, n_classes: int
) -> dict[int, dict[str, float]]:
    """Dice and IoU of each label ``0..n_classes-1`` pooled over all pixels of the whole set.

    Label 0 (background, in the pipeline's maps) is scored like any other. A class absent
    from both prediction and truth scores 1.0 (the both-empty convention of this module).
    """
    pred = np.asarray(pred_labels).ravel()
    true = np.asarray(true_labels).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"label maps differ in size: {np.shape(pred_labels)} vs {np.shape(true_labels)}")
    _check_labels(pred, n_classes, "pred_labels")
    _check_labels(true, n_classes, "true_labels")
    # The confusion matrix holds every count needed: diagonal = intersection, margins = sizes.
    cm = confusion_matrix(true, pred, n_classes)
    inter = np.diag(cm).astype(np.float64)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    dice = _safe_divide(2.0 * inter, t + p, empty=1.0)
    iou = _safe_divide(inter, t + p - inter, empty=1.0)
    return {k: {"dice": float(dice[k]), "iou": float(iou[k])} for k in range(n_classes)}


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


def _check_labels(labels: np.ndarray, n: int, name: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"{name}: labels must lie in [0, {n}), got [{labels.min()}, {labels.max()}]")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``(n, n)`` int64 counts; row = true class, column = predicted class.

    The counts of ``sklearn.metrics.confusion_matrix(labels=range(n))`` (tests cross-check),
    kept as a bincount: twice as fast on the pixel maps of a test set, an empty set is fine,
    and out-of-range labels raise instead of being dropped.
    """
    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    _check_labels(t, n, "y_true")
    _check_labels(p, n, "y_pred")
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and macro F1; zero division gives 0.0.

    sklearn's precision, recall and support equal these (tests cross-check); its F1 is
    2tp / (2tp + fp + fn), which differs from 2PR / (P + R) in the last bit, so keeping this
    formula keeps every metrics/*.json byte-identical.
    """
    n = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_divide(tp, cm.sum(axis=0))
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2.0 * precision * recall, precision + recall)
    total = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(class_names)
        },
        "macro_f1": float(f1.mean()) if n else 0.0,
    }
