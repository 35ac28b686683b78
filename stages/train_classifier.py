"""DVC stage train_classifier: the from-scratch CNN on the prepared classification arrays."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.arrays import class_names, load_classification
from cnnpipe.io import write_json
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage import log, run_stage
from cnnpipe.tasks.classification import train_classifier
from cnnpipe.tasks.common import TrainOutputs, save_model


def main(params: Params) -> None:
    paths = params.paths
    data = Path(paths.prepared) / "classification"
    set_global_seed(params.seed)
    train, val = load_classification(data, "train"), load_classification(data, "val")
    out = TrainOutputs(
        model=Path(paths.models) / "classifier.keras",
        history_csv=Path(paths.plots) / "history" / "classifier.csv",
        checkpoint_dir=Path(paths.models) / ".checkpoints" / "classifier",
    )
    result = train_classifier(
        train, val, len(class_names(data)), params.train_classifier, params.augment, params.seed, out
    )
    save_model(result.model, out.model)
    summary = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from,
        "seconds_per_epoch": round(result.seconds_per_epoch, 2),
        "train_images_per_s": round(len(train.images) / result.seconds_per_epoch, 1) if result.seconds_per_epoch else None,
        "params": result.model.count_params(),
    }
    write_json(Path(paths.metrics) / "train" / "classifier.json", summary)
    log.info("classifier: %s", summary)


if __name__ == "__main__":
    run_stage("train_classifier", main)
