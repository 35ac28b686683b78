"""DVC stage train_classifier: the from-scratch CNN on the prepared classification arrays."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage_shell import publish_summary, publish_timings, run_stage
from cnnpipe.tracking.keras import epoch_logger
from cnnpipe.tracking.runs import stage_run
from cnnpipe.training.classifier import train_classifier
from cnnpipe.training.outputs import TrainOutputs, save_model


def main(params: Params) -> None:
    paths = params.paths
    data = prepared_dir(params, "classifier")
    out = TrainOutputs.named(paths.models, paths.plots, "classifier")
    with stage_run("train_classifier", params, param_sections=["seed", "augment", "train_classifier"],
                   inputs={"classification": data}) as run:
        set_global_seed(params.seed, params.train_classifier.fit.inter_op_threads)
        prepared = PreparedSet.open(data, producer="prepare_classification")
        train, val = prepared.load("train"), prepared.load("val")
        run.log_dataset(train.images, "classification-train", run.tags["dvc.classification"],
                        source=data, targets=train.labels)
        result = train_classifier(
            train, val, len(prepared.class_names), params.train_classifier, params.augment, params.seed, out,
            callbacks=(epoch_logger(run),), strategy=params.train.strategy,
        )
        save_model(result.model, out.model, checkpoint=out.checkpoint_dir)
        publish_summary(run, Path(paths.metrics) / "train" / "classifier.json", result.summary(), out.history_csv)
        timings = result.timings()
        if result.seconds_per_epoch:
            timings["train_images_per_s"] = round(len(train.images) / result.seconds_per_epoch, 1)
        publish_timings(run, paths.reports, "classifier", timings)


if __name__ == "__main__":
    run_stage("train_classifier", main)
