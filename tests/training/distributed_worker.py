"""One training process of tests/training/test_distribute.py: the classifier task for one epoch on tiny,
learnable data, under the strategy named in argv (TF_CONFIG from the environment).

Prints nothing; writes ``<out>/result.json`` with the final validation accuracy and a hash of
the trained weights (synchronous workers must end with the same weights).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def tiny_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c has a bright bar on rows 2c..2c+2 over uniform noise: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.uint8)
    x = rng.random((n, 28, 28, 1), dtype=np.float32) * 0.3
    for c in range(10):
        x[y == c, 2 * c + 4 : 2 * c + 6, 4:24] += 0.7
    return x, y


def main(out: Path, strategy: str) -> None:
    from cnnpipe.training.distribute import get_strategy

    get_strategy(strategy)  # before any TF op, as the stage shells do
    from cnnpipe.config import AugmentParams, ClassifierParams, FitParams
    from cnnpipe.data.prepared import Split
    from cnnpipe.seeding import set_global_seed
    from cnnpipe.training.classifier import train_classifier
    from cnnpipe.training.outputs import TrainOutputs

    set_global_seed(0)
    x, y = tiny_data(960, seed=1)
    xv, yv = tiny_data(200, seed=2)
    fit = FitParams(epochs=1, batch_size=32, learning_rate=0.01, weight_decay=1e-4, schedule="cosine",
                    warmup_epochs=0.0, patience=5, augment=False, steps_per_epoch=None, precision="float32",
                    inter_op_threads=None)
    params = ClassifierParams(filters=(8, 16), convs_per_block=1, dense=32, dropout=0.0, label_smoothing=0.0, fit=fit)
    outs = TrainOutputs.named(out / "models", out / "plots", "classifier")
    result = train_classifier(Split(x, y), Split(xv, yv), 10, params, AugmentParams(flip=False, shift=0.0, rotation=0.0, zoom=0.0),
                              0, outs, strategy=strategy)
    # Trainable weights only: BatchNorm's moving statistics follow each worker's own batches.
    weights = {w.path: hashlib.sha256(np.asarray(w.numpy()).tobytes()).hexdigest()[:16]
               for w in result.model.trainable_weights}
    (out / "result.json").write_text(json.dumps(
        {"val_accuracy": result.history["val_accuracy"][-1], "weights": weights, "epochs_run": result.epochs_run,
         "moving": {w.path: float(np.asarray(w.numpy()).sum()) for w in result.model.non_trainable_weights}}
    ))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
