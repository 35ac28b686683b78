"""DVC stages ``evaluate@<task>``: score one task's trained model on its held-out test data.

Writes ``metrics/<task>.json`` (classifier, transfer, localizer, unet) and the task's figures
under ``plots/evaluate/``: the confusion heatmap, its CSV and Grad-CAM (classifier), box
overlays (localizer), mask overlays (unet). ``--task`` picks the task; without it every task
is scored in turn, each in its own MLflow run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnpipe.config import Params
from cnnpipe.data.formats.prepare_own import index_masks, prepared_dir
from cnnpipe.data.prepared import Split, class_names, load_classification, load_scenes
from cnnpipe.evaluation import evaluate as ev
from cnnpipe.evaluation import plots
from cnnpipe.evaluation import scoring as metrics
from cnnpipe.io import write_json
from cnnpipe.stage_shell import run_task_stage
from cnnpipe.taskspec import TASKS, TRANSFER_VARIANTS
from cnnpipe.tracking.runs import stage_run

log = logging.getLogger("cnnpipe")


# Each evaluator: (params, the task's models, its test data dir, the figures dir) ->
# (metrics report, test split, figures written).
Result = tuple[dict[str, Any], Split, list[Path]]


def evaluate_classifier(params: Params, models: dict[str, Any], data_dir: Path, fig: Path) -> Result:
    """Report, confusion matrix, Grad-CAM."""
    n_cam = params.evaluate.gradcam_examples
    model, test, names = models["classifier.keras"], load_classification(data_dir, "test"), class_names(data_dir)
    x, y = test.images, test.labels
    report, pred = ev.evaluate_classifier(model, x, y, names)
    figures = [fig / "confusion.png", fig / "confusion.csv", fig / "gradcam.png"]
    plots.confusion_heatmap(metrics.confusion_matrix(y, pred, len(names)), names, figures[0])
    plots.confusion_csv(y, pred, names, figures[1])
    cam = plots.gradcam(model, x[:n_cam])
    plots.gradcam_grid(x[:n_cam], cam, y[:n_cam], pred[:n_cam], names, figures[2])
    log.info("classifier: accuracy %.4f, macro F1 %.4f", report["accuracy"], report["macro_f1"])
    return report, test, figures


def evaluate_transfer(params: Params, models: dict[str, Any], data_dir: Path, fig: Path) -> Result:
    """The same test scenes' labels for all three modes; no figure."""
    test = load_scenes(data_dir, "test")
    report = ev.evaluate_transfer(
        {m: models[f"transfer/{m}.keras"] for m in TRANSFER_VARIANTS}, test.images, test.labels,
        params.transfer.backbone, params.transfer.labels_per_class,
    )
    log.info("transfer: %s", {m: round(report[m]["accuracy"], 4) for m in TRANSFER_VARIANTS})
    return report, test, []


def evaluate_localizer(params: Params, models: dict[str, Any], data_dir: Path, fig: Path) -> Result:
    """IoU and class accuracy, box overlays."""
    n = params.evaluate.overlay_examples
    test, names = load_scenes(data_dir, "test"), class_names(data_dir)
    report, pred_cls, pred_box = ev.evaluate_localizer(models["localizer.keras"], test.images, test.boxes,
                                                       test.labels)
    plots.box_grid(test.images[:n], test.boxes[:n], pred_box[:n], test.labels[:n], pred_cls[:n], names,
                   fig / "boxes.png")
    log.info("localizer: mean IoU %.4f, IoU>=0.5 %.4f", report["mean_iou"], report["iou50_rate"])
    return report, test, [fig / "boxes.png"]


def evaluate_unet(params: Params, models: dict[str, Any], data_dir: Path, fig: Path) -> Result:
    """Dice/IoU/pixel accuracy, mask overlays."""
    n = params.evaluate.overlay_examples
    test, names, indexed = load_scenes(data_dir, "test"), class_names(data_dir), index_masks(data_dir)
    report, pred_maps = ev.evaluate_unet(models["unet.keras"], test.images, test.masks, test.labels,
                                         params.train_unet.multiclass or indexed, names, indexed)
    plots.mask_overlay_grid(test.images[:n], test.masks[:n], pred_maps[:n], fig / "masks.png")
    log.info("unet: dice %.4f, iou %.4f, mean per-class dice %.4f", report["dice"], report["iou"],
             report["mean_dice"])
    return report, test, [fig / "masks.png"]


EVALUATORS: dict[str, Callable[[Params, dict[str, Any], Path, Path], Result]] = {
    "classifier": evaluate_classifier,
    "transfer": evaluate_transfer,
    "localizer": evaluate_localizer,
    "unet": evaluate_unet,
}


def main(params: Params, task: str) -> None:
    """Score ``task``'s model: ``metrics/<task>.json``, its figures, one MLflow run ``evaluate@<task>``."""
    models_dir = Path(params.paths.models)
    # Own localization / segmentation data lives in <prepared>/<format>; the default is the scenes.
    data_dir = prepared_dir(params, task)
    out = Path(params.paths.metrics) / f"{task}.json"
    model_path = models_dir / TASKS[task].model_path
    inputs = {data_dir.name: data_dir, task: model_path}
    with stage_run(f"evaluate@{task}", params, param_sections=["evaluate"], inputs=inputs) as run:
        # The model first: a missing one fails before the test data is read.
        models = ev.load_models(models_dir, task)
        report, test, figures = EVALUATORS[task](params, models, data_dir, Path(params.paths.plots) / "evaluate")
        write_json(out, report)
        run.log_dataset(test.images, f"{data_dir.name}-test", run.tags[f"dvc.{data_dir.name}"], source=data_dir,
                        context="testing", targets=test.labels)
        # Prefixed by task, as the four reports share keys (n_test, per_class.<name>).
        run.log_metrics({task: report})
        run.log_artifacts(out, "metrics")
        for figure in figures:
            run.log_artifacts(figure, "plots")


if __name__ == "__main__":
    run_task_stage("evaluate", main, tuple(TASKS))
