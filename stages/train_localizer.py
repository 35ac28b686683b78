"""DVC stage train_localizer: class + box on the scenes, from the classifier's backbone."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet, ShardedSplit, split_labels
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage_shell import publish_summary, publish_timings, run_stage
from cnnpipe.tracking.keras import epoch_logger
from cnnpipe.tracking.runs import stage_run
from cnnpipe.training.localizer import train_localizer
from cnnpipe.training.outputs import TrainOutputs, load_model, save_model


def main(params: Params) -> None:
    paths, lp = params.paths, params.train_localizer
    scenes = prepared_dir(params, "localization")  # the scenes, or <prepared>/<format> of own data
    classifier = Path(paths.models) / "classifier.keras"
    out = TrainOutputs.named(paths.models, paths.plots, "localizer")
    with stage_run("train_localizer", params, param_sections=["seed", "augment", "train_classifier", "train_localizer"],
                   inputs={"scenes": scenes, "classifier": classifier}) as run:
        set_global_seed(params.seed, params.train_localizer.fit.inter_op_threads)
        pretrained = None
        if lp.backbone == "classifier":
            pretrained = load_model(classifier, producer="train_classifier")
        data = PreparedSet.open(scenes)
        data.require("boxes", "datasets.localization")
        train = data.split("train")  # streamed from disk when sharded
        labels = split_labels(train)
        # Sharded: the labels stand for the set (MLflow would profile every image in memory).
        run.log_dataset(labels if isinstance(train, ShardedSplit) else train.images, "scenes-train",
                        run.tags["dvc.scenes"], source=scenes, targets=labels)
        result = train_localizer(
            train, data.split("val"), len(data.class_names), lp, params.augment, params.seed,
            out, pretrained, params.train_classifier, callbacks=(epoch_logger(run),),
            strategy=params.train.strategy,
        )
        save_model(result.model, out.model, checkpoint=out.checkpoint_dir)
        summary = {**result.summary(), "backbone": lp.backbone}
        publish_summary(run, Path(paths.metrics) / "train" / "localizer.json", summary, out.history_csv)
        publish_timings(run, paths.reports, "localizer", result.timings())


if __name__ == "__main__":
    run_stage("train_localizer", main)
