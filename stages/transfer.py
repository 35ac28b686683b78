"""DVC stage transfer: scratch vs feature extraction vs fine-tuning on few-label scenes."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage_shell import publish_summary, publish_timings, run_stage
from cnnpipe.tracking.runs import stage_run
from cnnpipe.training.outputs import load_model, save_model
from cnnpipe.training.transfer import train_transfer, transfer_outputs


def main(params: Params) -> None:
    paths, tp = params.paths, params.transfer
    scenes = prepared_dir(params, "transfer")
    classifier_path = Path(paths.models) / "classifier.keras"
    outs = transfer_outputs(Path(paths.models), Path(paths.plots))
    with stage_run("transfer", params, param_sections=["seed", "augment", "train_classifier", "transfer"],
                   inputs={"scenes": scenes, "classifier": classifier_path}) as run:
        set_global_seed(params.seed, params.transfer.fit.inter_op_threads)
        classifier = None
        if tp.backbone == "classifier":
            classifier = load_model(classifier_path, producer="train_classifier")
        # The task draws its few labels per class from this split. It takes no callbacks, so its
        # three fits reach MLflow as history CSVs rather than per-epoch metrics.
        data = PreparedSet.open(scenes)
        train = data.load("train")
        run.log_dataset(train.images, "scenes-train", run.tags["dvc.scenes"], source=scenes, targets=train.labels)
        result = train_transfer(
            train, data.load("val"), len(data.class_names), tp,
            params.augment, params.seed, outs, classifier, params.train_classifier,
        )
        summary = {"backbone": tp.backbone, "labels_per_class": tp.labels_per_class,
                   "unfrozen_layers": result.unfrozen_layers}
        timings = {}
        for style, model in result.models.items():
            save_model(model, outs[style].model, checkpoint=outs[style].checkpoint_dir)
            fit = result.fits[style]
            summary[style] = {"epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch}
            timings[style] = fit.timings()
        publish_summary(run, Path(paths.metrics) / "train" / "transfer.json", summary,
                        *(out.history_csv for out in outs.values()))
        publish_timings(run, paths.reports, "transfer", timings)


if __name__ == "__main__":
    run_stage("transfer", main)
