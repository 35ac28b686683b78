"""DVC stage transfer: scratch vs feature extraction vs fine-tuning on few-label scenes."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.arrays import class_names, load_scenes
from cnnpipe.io import write_json
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage import log, run_stage
from cnnpipe.tasks.common import load_model, save_model
from cnnpipe.tasks.transfer import train_transfer, transfer_outputs


def main(params: Params) -> None:
    paths, tp = params.paths, params.transfer
    scenes = Path(paths.prepared) / "scenes"
    set_global_seed(params.seed)
    classifier = None
    if tp.backbone == "classifier":
        classifier = load_model(Path(paths.models) / "classifier.keras", producer="train_classifier")
    outs = transfer_outputs(Path(paths.models), Path(paths.plots))
    result = train_transfer(
        load_scenes(scenes, "train"), load_scenes(scenes, "val"), len(class_names(scenes)), tp,
        params.augment, params.seed, outs, classifier, params.train_classifier,
    )
    summary = {"backbone": tp.backbone, "labels_per_class": tp.labels_per_class,
               "unfrozen_layers": result.unfrozen_layers}
    for style, model in result.models.items():
        save_model(model, outs[style].model)
        fit = result.fits[style]
        summary[style] = {"epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch,
                          "seconds_per_epoch": round(fit.seconds_per_epoch, 2)}
    write_json(Path(paths.metrics) / "train" / "transfer.json", summary)
    log.info("transfer: %s", summary)


if __name__ == "__main__":
    run_stage("transfer", main)
