"""Evaluation figures (PNG, written atomically): confusion matrix, transfer accuracies,
box and mask overlays, Grad-CAM overlays (the maps themselves: :mod:`cnnpipe.evaluation.gradcam`).

Figures are drawn on an explicit Agg canvas rather than through ``pyplot``: no global
backend state, no GUI, and nothing happens at import time. :func:`cnnpipe.io.write_png`
strips the PNG metadata so the same arrays always give the same bytes (DVC then sees an
unchanged plot as unchanged).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cnnpipe.io import atomic_file, write_png

TRUE_COLOR = "lime"
PRED_COLOR = "red"


def _save(fig: Figure, path: str | Path) -> None:
    FigureCanvasAgg(fig)
    write_png(fig, path)


def _grid(n: int, cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return math.ceil(max(n, 1) / cols), cols


def _gray(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 1)`` image in [0, 1] or 0..255 -> ``(H, W)`` float in [0, 1]."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., 0]
    if img.max(initial=0.0) > 1.0:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def _axes_grid(n: int, cell: float = 2.2, cols: int = 4) -> tuple[Figure, list[Any]]:
    rows, cols = _grid(n, cols)
    fig = Figure(figsize=(cell * cols, cell * rows + 0.4), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


# --------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------


def confusion_heatmap(cm: np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """Heatmap of a ``(n, n)`` confusion matrix (rows true, columns predicted), counts printed.

    Colour is the row-normalized share, so rare classes read as clearly as common ones.
    """
    cm = np.asarray(cm)
    n = len(class_names)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.6 * n + 2.0)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black")
    _save(fig, path)


def confusion_csv(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: str | Path
) -> None:
    """One ``actual,predicted`` row per example: the input of DVC's ``confusion`` template."""
    with atomic_file(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        for t, p in zip(np.asarray(y_true).ravel(), np.asarray(y_pred).ravel(), strict=True):
            writer.writerow([class_names[int(t)], class_names[int(p)]])


# --------------------------------------------------------------------------------------
# Localization and segmentation overlays
# --------------------------------------------------------------------------------------


def _rect(box: np.ndarray, side_w: int, side_h: int, color: str) -> Rectangle:
    x, y, w, h = (float(v) for v in box)
    # imshow puts pixel centres on integers, so the canvas spans [-0.5, side - 0.5].
    return Rectangle((x * side_w - 0.5, y * side_h - 0.5), w * side_w, h * side_h,
                     fill=False, edgecolor=color, linewidth=1.5)


def box_grid(
    images: np.ndarray,
    true_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    labels: np.ndarray,
    pred_labels: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
) -> None:
    """Scenes with the true box (green) and the predicted box (red); boxes are (x,y,w,h) fractions."""
    fig, axes = _axes_grid(len(images))
    for i, img in enumerate(images):
        g = _gray(img)
        ax = axes[i]
        ax.imshow(g, cmap="gray", vmin=0.0, vmax=1.0)
        ax.add_patch(_rect(true_boxes[i], g.shape[1], g.shape[0], TRUE_COLOR))
        ax.add_patch(_rect(pred_boxes[i], g.shape[1], g.shape[0], PRED_COLOR))
        ok = int(labels[i]) == int(pred_labels[i])
        ax.set_title(f"{class_names[int(labels[i])]}\n→ {class_names[int(pred_labels[i])]}",
                     fontsize=8, color="black" if ok else PRED_COLOR)
    fig.suptitle("green: true box, red: predicted", fontsize=9)
    _save(fig, path)


def mask_overlay_grid(
    images: np.ndarray, true_masks: np.ndarray, pred_masks: np.ndarray, path: str | Path
) -> None:
    """Scenes tinted green where the true mask is, red where the prediction is (overlap: yellow)."""
    fig, axes = _axes_grid(len(images))
    for i, img in enumerate(images):
        g = _gray(img)
        t = np.asarray(true_masks[i]).reshape(g.shape) != 0
        p = np.asarray(pred_masks[i]).reshape(g.shape) != 0
        rgb = np.stack([g, g, g], axis=-1) * 0.6
        rgb[..., 0] += 0.4 * p
        rgb[..., 1] += 0.4 * t
        axes[i].imshow(np.clip(rgb, 0.0, 1.0))
    fig.suptitle("green: true mask, red: predicted, yellow: both", fontsize=9)
    _save(fig, path)


# --------------------------------------------------------------------------------------
# Transfer accuracies and Grad-CAM overlays
# --------------------------------------------------------------------------------------


def accuracy_bars(accuracies: dict[str, float], path: str | Path) -> None:
    """One bar per transfer mode: its test accuracy, printed on the bar."""
    names = list(accuracies)
    fig = Figure(figsize=(max(4.0, 1.4 * len(names) + 1.0), 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(range(len(names)), [accuracies[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(names)), labels=[n.replace("_", " ") for n in names])
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("test accuracy")
    _save(fig, path)


def gradcam_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
) -> None:
    """Each image with its Grad-CAM heatmap laid over it, titled true -> predicted."""
    fig, axes = _axes_grid(len(images))
    for i, img in enumerate(images):
        ax = axes[i]
        ax.imshow(_gray(img), cmap="gray", vmin=0.0, vmax=1.0)
        ax.imshow(np.asarray(heatmaps[i]), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        ok = int(labels[i]) == int(preds[i])
        ax.set_title(f"{class_names[int(labels[i])]}\n→ {class_names[int(preds[i])]}",
                     fontsize=8, color="black" if ok else PRED_COLOR)
    fig.suptitle("HiResCAM heat of the predicted class (true → predicted)", fontsize=9)
    _save(fig, path)
