"""DVC stage train_unet: U-Net masks for the scenes (binary by default)."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.config import Params
from cnnpipe.data.arrays import class_names, load_scenes
from cnnpipe.io import write_json
from cnnpipe.seeding import set_global_seed
from cnnpipe.stage import log, run_stage
from cnnpipe.tasks.common import TrainOutputs, save_model
from cnnpipe.tasks.segmentation import train_unet


def main(params: Params) -> None:
    paths, up = params.paths, params.train_unet
    scenes = Path(paths.prepared) / "scenes"
    set_global_seed(params.seed)
    out = TrainOutputs(
        model=Path(paths.models) / "unet.keras",
        history_csv=Path(paths.plots) / "history" / "unet.csv",
        checkpoint_dir=Path(paths.models) / ".checkpoints" / "unet",
    )
    result = train_unet(
        load_scenes(scenes, "train"), load_scenes(scenes, "val"), len(class_names(scenes)), up,
        params.augment, params.seed, out,
    )
    save_model(result.model, out.model)
    summary = {
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from, "seconds_per_epoch": round(result.seconds_per_epoch, 2),
        "multiclass": up.multiclass, "params": result.model.count_params(),
    }
    write_json(Path(paths.metrics) / "train" / "unet.json", summary)
    log.info("unet: %s", summary)


if __name__ == "__main__":
    run_stage("train_unet", main)
