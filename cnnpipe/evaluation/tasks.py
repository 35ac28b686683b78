"""The evaluation of each task (the keys of :data:`cnnpipe.taskspec.TASKS`): read the test
split of its prepared set, score its models, draw its figures.

``EVALUATORS[task](params, models, data, figures_dir)`` returns the metrics report (the
content of ``metrics/<task>.json``), the test split (logged as the run's dataset) and the
figures written into ``figures_dir`` (the task's own folder, the stage's DVC output, so every
task writes at least one); the stage ``evaluate@<task>`` only loads, calls, writes and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnpipe.config import Params
from cnnpipe.data.images import to_model_input
from cnnpipe.data.prepared import PreparedSet, Split
from cnnpipe.evaluation import evaluate, plots
from cnnpipe.evaluation import scoring as metrics
from cnnpipe.evaluation.gradcam import gradcam, zero_maps
from cnnpipe.taskspec import TRANSFER_VARIANTS

log = logging.getLogger("cnnpipe")


# Each evaluator: (params, the task's models, its prepared set, the figures dir) ->
# (metrics report, test split, figures written).
Result = tuple[dict[str, Any], Split, list[Path]]


def evaluate_classifier(params: Params, models: dict[str, Any], data: PreparedSet, fig: Path) -> Result:
    """Report, confusion matrix, Grad-CAM."""
    n_cam = params.evaluate.gradcam_examples
    model, test, names = models["classifier.keras"], data.load("test"), list(data.class_names)
    x, y = test.images, test.labels
    report, pred = evaluate.evaluate_classifier(model, x, y, names)
    figures = [fig / "confusion.png", fig / "confusion.csv", fig / "gradcam.png"]
    plots.confusion_heatmap(metrics.confusion_matrix(y, pred, len(names)), names, figures[0])
    plots.confusion_csv(y, pred, names, figures[1])
    shown = to_model_input(x[:n_cam])
    cam = gradcam(model, shown)
    if zero_maps(cam):
        log.warning("classifier: %d of %d Grad-CAM maps show no positive evidence", zero_maps(cam), len(cam))
    plots.gradcam_grid(shown, cam, y[:n_cam], pred[:n_cam], names, figures[2])
    log.info("classifier: accuracy %.4f, macro F1 %.4f", report["accuracy"], report["macro_f1"])
    return report, test, figures


def evaluate_transfer(params: Params, models: dict[str, Any], data: PreparedSet, fig: Path) -> Result:
    """The same test scenes' labels for all three modes; accuracy by mode, and the confusion
    matrix (PNG and CSV) of the fine-tuned model, the one registered."""
    test, names = data.load("test"), list(data.class_names)
    report, preds = evaluate.evaluate_transfer(
        {m: models[f"transfer/{m}.keras"] for m in TRANSFER_VARIANTS}, test.images, test.labels,
        params.transfer.backbone, params.transfer.labels_per_class,
    )
    figures = [fig / "accuracy.png", fig / "confusion.png", fig / "confusion.csv"]
    plots.accuracy_bars({m: report[m]["accuracy"] for m in TRANSFER_VARIANTS}, figures[0])
    tuned = preds["fine_tuning"]
    plots.confusion_heatmap(metrics.confusion_matrix(test.labels, tuned, len(names)), names, figures[1])
    plots.confusion_csv(test.labels, tuned, names, figures[2])
    log.info("transfer: %s", {m: round(report[m]["accuracy"], 4) for m in TRANSFER_VARIANTS})
    return report, test, figures


def evaluate_localizer(params: Params, models: dict[str, Any], data: PreparedSet, fig: Path) -> Result:
    """IoU and class accuracy, box overlays."""
    n = params.evaluate.overlay_examples
    test, names = data.load("test"), list(data.class_names)
    report, pred_cls, pred_box = evaluate.evaluate_localizer(models["localizer.keras"], test.images, test.boxes,
                                                       test.labels)
    plots.box_grid(test.images[:n], test.boxes[:n], pred_box[:n], test.labels[:n], pred_cls[:n], names,
                   fig / "boxes.png")
    log.info("localizer: mean IoU %.4f, IoU>=0.5 %.4f", report["mean_iou"], report["iou50_rate"])
    return report, test, [fig / "boxes.png"]


def evaluate_unet(params: Params, models: dict[str, Any], data: PreparedSet, fig: Path) -> Result:
    """Dice/IoU/pixel accuracy, mask overlays."""
    n = params.evaluate.overlay_examples
    test, names, model = data.load("test"), list(data.class_names), models["unet.keras"]
    # The head was decided once, at training: one sigmoid channel (binary) or a softmax per class.
    report, pred_maps = evaluate.evaluate_unet(model, test.images, test.masks, test.labels,
                                         model.output_shape[-1] > 1, names, data.index_masks)
    plots.mask_overlay_grid(test.images[:n], test.masks[:n], pred_maps[:n], fig / "masks.png")
    log.info("unet: dice %.4f, iou %.4f, mean per-class dice %.4f", report["dice"], report["iou"],
             report["mean_dice"])
    return report, test, [fig / "masks.png"]


# Keyed like cnnpipe.taskspec.TASKS (a test checks they match).
EVALUATORS: dict[str, Callable[[Params, dict[str, Any], PreparedSet, Path], Result]] = {
    "classifier": evaluate_classifier,
    "transfer": evaluate_transfer,
    "localizer": evaluate_localizer,
    "unet": evaluate_unet,
}
