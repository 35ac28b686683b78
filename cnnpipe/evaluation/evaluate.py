"""Test-set evaluation of every trained model: prediction in batches, then metrics and figures.

Each ``evaluate_*`` function takes a loaded model and test arrays and returns the JSON-ready
metrics dict of its ``metrics/<name>.json``; :mod:`cnnpipe.evaluation.tasks` feeds them each
task's test split and draws the figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.data.images import to_model_input
from cnnpipe.data.masks import class_index_masks, decide_mask
from cnnpipe.errors import ModelError
from cnnpipe.evaluation import scoring as metrics
from cnnpipe.taskspec import PRODUCERS, TASKS, TRANSFER_VARIANTS
from cnnpipe.training.outputs import load_model

# Rows per forward pass: bounds memory (a multiclass U-Net output is H*W*(C+1) floats per
# image) while keeping the per-call overhead small on CPU.
BATCH_SIZE = 256


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_models(models_dir: str | Path, task: str | None = None) -> dict[str, Any]:
    """Every model the stage scores (only ``task``'s, if given), keyed by its file name under
    ``models_dir``.

    Loaded in safe mode for inference; a missing or broken file raises ``ModelError``
    naming the file and the stage that writes it.
    """
    names = TASKS[task].model_files if task else tuple(PRODUCERS)
    return {name: load_model(Path(models_dir) / name, PRODUCERS[name]) for name in names}


# --------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------


def predict_batches(
    model: Any, images: np.ndarray, reduce: Callable[[Any], Any], batch_size: int = BATCH_SIZE
) -> Iterator[Any]:
    """Yield ``reduce(model output)`` batch by batch, so raw outputs never pile up in memory."""
    for start in range(0, len(images), batch_size):
        yield reduce(model.predict_on_batch(to_model_input(images[start:start + batch_size])))


def predict_classes(model: Any, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Arg-max class of a softmax classifier, ``(N,)`` int64."""
    parts = list(predict_batches(model, images, lambda p: np.argmax(p, axis=-1), batch_size))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Per-model evaluation
# --------------------------------------------------------------------------------------


def evaluate_classifier(
    model: Any, x: np.ndarray, y: np.ndarray, class_names: Sequence[str]
) -> tuple[dict[str, Any], np.ndarray]:
    """Classification report plus ``n_test``; also returns the predictions (for the figures)."""
    pred = predict_classes(model, x)
    report = metrics.classification_report(y, pred, class_names)
    report["n_test"] = len(y)
    return report, pred


def evaluate_transfer(
    models: dict[str, Any], images: np.ndarray, labels: np.ndarray, backbone: str, labels_per_class: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Test accuracy of each transfer mode and the gain of each pretrained mode over scratch;
    also returns each mode's predictions (for the figures)."""
    out: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    for mode in TRANSFER_VARIANTS:
        preds[mode] = pred = predict_classes(models[mode], images)
        out[mode] = {"accuracy": float(np.mean(pred == labels)) if len(labels) else 0.0}
    base = out["scratch"]["accuracy"]
    # Gains are accuracy differences, so they lie in [-1, 1]: negative means transfer hurt.
    out["gain_feature_extraction"] = out["feature_extraction"]["accuracy"] - base
    out["gain_fine_tuning"] = out["fine_tuning"]["accuracy"] - base
    out["backbone"] = backbone
    out["labels_per_class"] = int(labels_per_class)
    return out, preds


def predict_localizer(model: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes ``(N,)`` and boxes ``(N, 4)`` (x, y, w, h fractions) of a localizer."""
    def reduce(out: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(out, dict) or not {"class", "box"} <= set(out):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ModelError(f"localizer must output a dict with keys 'class' and 'box', got {got}")
        return np.argmax(out["class"], axis=-1), np.asarray(out["box"], dtype=np.float32)

    parts = list(predict_batches(model, images, reduce))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32)
    return np.concatenate([c for c, _ in parts]), np.concatenate([b for _, b in parts])


def evaluate_localizer(
    model: Any, images: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Mean IoU, share of boxes with IoU >= 0.5, class accuracy; also returns the predictions."""
    pred_cls, pred_box = predict_localizer(model, images)
    iou = metrics.box_iou(pred_box, boxes) if len(boxes) else np.zeros(0)
    n = len(labels)
    result = {
        "mean_iou": float(iou.mean()) if n else 0.0,
        "iou50_rate": float(np.mean(iou >= 0.5)) if n else 0.0,
        "class_accuracy": float(np.mean(pred_cls == labels)) if n else 0.0,
        "n_test": int(n),
    }
    return result, pred_cls, pred_box


def predict_unet_labels(model: Any, images: np.ndarray, multiclass: bool) -> np.ndarray:
    """Label maps ``(N, H, W)`` uint8: 0/1 for a sigmoid U-Net, 0..C (0 = background) for softmax."""
    channels = model.output_shape[-1]
    if multiclass == (channels == 1):
        want = "C+1 softmax channels (train_unet.multiclass: true)" if multiclass else \
            "1 sigmoid channel (train_unet.multiclass: false)"
        raise ModelError(f"U-Net has {channels} output channel(s) but params expect {want}")

    parts = list(predict_batches(model, images, lambda prob: decide_mask(prob).astype(np.uint8)))
    return np.concatenate(parts) if parts else np.zeros((0, *images.shape[1:3]), dtype=np.uint8)


def evaluate_unet(
    model: Any,
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    multiclass: bool,
    class_names: Sequence[str],
    index_masks: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Dice, IoU and pixel accuracy (foreground vs background, mean over images) and per-class
    Dice/IoU pooled over the test set ("background" included); also returns predicted label maps.

    ``index_masks``: ``masks`` already hold class ids (0 background, k + 1 = class_names[k]), as
    own segmentation data with several classes does; else they are {0, 1} item masks.
    """
    pred = predict_unet_labels(model, images, multiclass)
    true_fg = masks != 0
    if index_masks:
        true = masks.astype(np.int64)
        names = ["background", *class_names]
    elif multiclass:
        true = class_index_masks(true_fg, labels)
        names = ["background", *class_names]
    else:
        true = true_fg.astype(np.int64)
        names = ["background", "item"]
    pred_fg = pred != 0
    per_class = metrics.per_class_dice_iou(pred, true, len(names))
    named = {names[k]: v for k, v in per_class.items()}
    n = len(images)
    return {
        "dice": float(metrics.mask_dice(pred_fg, true_fg).mean()) if n else 0.0,
        "iou": float(metrics.mask_iou(pred_fg, true_fg).mean()) if n else 0.0,
        "pixel_accuracy": float(metrics.pixel_accuracy(pred_fg, true_fg).mean()) if n else 0.0,
        "per_class": named,
        "mean_dice": float(np.mean([v["dice"] for v in named.values()])),
        "n_test": int(n),
    }, pred
