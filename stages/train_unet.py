"""DVC stage train_unet: U-Net masks for the scenes (binary by default)."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.layout import prepared_dir
from cnnpipe.data.prepared import PreparedSet, ShardedSplit, split_labels
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage_shell import publish_summary, publish_timings, run_stage
from cnnpipe.tracking.keras import epoch_logger
from cnnpipe.tracking.runs import stage_run
from cnnpipe.training.outputs import TrainOutputs, save_model
from cnnpipe.training.unet import train_unet


def main(params: Params) -> None:
    paths, up = params.paths, params.train_unet
    scenes = prepared_dir(params, "segmentation")  # the scenes, or <prepared>/<format> of own data
    out = TrainOutputs.named(paths.models, paths.plots, "unet")
    data = PreparedSet.open(scenes)
    data.require("masks", "datasets.segmentation")
    if data.index_masks:  # own masks of class ids: one softmax channel per class (evaluate reads the head)
        up = up.model_copy(update={"multiclass": True})
    with stage_run("train_unet", params, param_sections=["seed", "augment", "train_unet"],
                   inputs={"scenes": scenes}) as run:
        set_global_seed(params.seed, params.train_unet.fit.inter_op_threads)
        train = data.split("train")  # streamed from disk when sharded
        labels = split_labels(train)
        # Sharded: the labels stand for the set (MLflow would profile every image in memory).
        run.log_dataset(labels if isinstance(train, ShardedSplit) else train.images, "scenes-train",
                        run.tags["dvc.scenes"], source=scenes, targets=labels)
        result = train_unet(
            train, data.split("val"), len(data.class_names), up, params.augment, params.seed, out,
            callbacks=(epoch_logger(run),), strategy=params.train.strategy,
        )
        save_model(result.model, out.model, checkpoint=out.checkpoint_dir)
        summary = {**result.summary(), "multiclass": up.multiclass}
        publish_summary(run, Path(paths.metrics) / "train" / "unet.json", summary, out.history_csv)
        publish_timings(run, paths.reports, "unet", result.timings())


if __name__ == "__main__":
    run_stage("train_unet", main)
