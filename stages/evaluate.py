"""DVC stage ``evaluate``: score every trained model on the held-out test data.

Writes ``metrics/{classifier,transfer,localizer,unet}.json`` and, under ``plots/evaluate/``,
the confusion heatmap and CSV, Grad-CAM, box and mask overlays.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cnnpipe import evaluation as ev
from cnnpipe import metrics, plots
from cnnpipe.config import Params
from cnnpipe.data.arrays import class_names, load_classification, load_scenes
from cnnpipe.data.datasets import index_masks, prepared_dir
from cnnpipe.io import write_json
from cnnpipe.stage import run_stage
from cnnpipe.tracking import stage_run

log = logging.getLogger("cnnpipe")


def main(params: Params) -> None:
    models_dir = Path(params.paths.models)
    cls_dir = Path(params.paths.prepared) / "classification"
    scn_dir = Path(params.paths.prepared) / "scenes"
    # Own localization / segmentation data lives in <prepared>/<format>; the default is the scenes.
    loc_dir, seg_dir = prepared_dir(params, "localization"), prepared_dir(params, "segmentation")
    out = Path(params.paths.metrics)
    fig = Path(params.paths.plots) / "evaluate"
    n_cam, n_overlay = params.evaluate.gradcam_examples, params.evaluate.overlay_examples
    inputs = {"classification": cls_dir, "scenes": scn_dir, "classifier": models_dir / "classifier.keras",
              "transfer": models_dir / "transfer", "localizer": models_dir / "localizer.keras",
              "unet": models_dir / "unet.keras"}
    with stage_run("evaluate", params, param_sections=["evaluate"], inputs=inputs) as run:
        # Load everything first: a missing model or array fails before minutes of prediction.
        models = ev.load_models(models_dir)
        cls = load_classification(cls_dir, "test")
        scn = load_scenes(scn_dir, "test")
        loc = scn if loc_dir == scn_dir else load_scenes(loc_dir, "test")
        seg = scn if seg_dir == scn_dir else load_scenes(seg_dir, "test")
        names, loc_names, seg_names = class_names(cls_dir), class_names(loc_dir), class_names(seg_dir)
        run.log_dataset(cls.images, "classification-test", run.tags["dvc.classification"], source=cls_dir,
                        context="testing", targets=cls.labels)
        run.log_dataset(scn.images, "scenes-test", run.tags["dvc.scenes"], source=scn_dir,
                        context="testing", targets=scn.labels)

        # Classifier: report, confusion matrix, Grad-CAM.
        x, y = cls.images, cls.labels
        report, pred = ev.evaluate_classifier(models["classifier.keras"], x, y, names)
        write_json(out / "classifier.json", report)
        plots.confusion_heatmap(metrics.confusion_matrix(y, pred, len(names)), names, fig / "confusion.png")
        plots.confusion_csv(y, pred, names, fig / "confusion.csv")
        cam = plots.gradcam(models["classifier.keras"], x[:n_cam])
        plots.gradcam_grid(x[:n_cam], cam, y[:n_cam], pred[:n_cam], names, fig / "gradcam.png")
        log.info("classifier: accuracy %.4f, macro F1 %.4f", report["accuracy"], report["macro_f1"])

        # Transfer: the same test scenes' labels for all three modes.
        images, labels = scn.images, scn.labels
        transfer = ev.evaluate_transfer(
            {m: models[f"transfer/{m}.keras"] for m in ev.TRANSFER_MODES}, images, labels,
            params.transfer.backbone, params.transfer.labels_per_class,
        )
        write_json(out / "transfer.json", transfer)
        log.info("transfer: %s", {m: round(transfer[m]["accuracy"], 4) for m in ev.TRANSFER_MODES})

        # Localizer: IoU and class accuracy, box overlays.
        loc_report, pred_cls, pred_box = ev.evaluate_localizer(models["localizer.keras"], loc.images, loc.boxes,
                                                               loc.labels)
        write_json(out / "localizer.json", loc_report)
        plots.box_grid(loc.images[:n_overlay], loc.boxes[:n_overlay], pred_box[:n_overlay],
                       loc.labels[:n_overlay], pred_cls[:n_overlay], loc_names, fig / "boxes.png")
        log.info("localizer: mean IoU %.4f, IoU>=0.5 %.4f", loc_report["mean_iou"], loc_report["iou50_rate"])

        # U-Net: Dice/IoU/pixel accuracy, mask overlays.
        indexed = index_masks(seg_dir)
        seg_report, pred_maps = ev.evaluate_unet(models["unet.keras"], seg.images, seg.masks, seg.labels,
                                                 params.train_unet.multiclass or indexed, seg_names, indexed)
        write_json(out / "unet.json", seg_report)
        plots.mask_overlay_grid(seg.images[:n_overlay], seg.masks[:n_overlay], pred_maps[:n_overlay],
                                fig / "masks.png")
        log.info("unet: dice %.4f, iou %.4f, mean per-class dice %.4f", seg_report["dice"], seg_report["iou"],
                 seg_report["mean_dice"])

        # One prefix per file: the four reports share keys (n_test, per_class.<name>).
        results = {"classifier": report, "transfer": transfer, "localizer": loc_report, "unet": seg_report}
        for name, result in results.items():
            run.log_metrics({name: result})
            run.log_artifacts(out / f"{name}.json", "metrics")
        run.log_artifacts(fig, "plots")


if __name__ == "__main__":
    run_stage("evaluate", main)
