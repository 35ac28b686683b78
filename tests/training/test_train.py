"""The one training routine: fits, logs curves, checkpoints each epoch and resumes."""

import csv
import json

import keras
import numpy as np
import pytest

from cnnpipe.config import FitParams
from cnnpipe.data.pipeline import make_dataset
from cnnpipe.models.classifier import build_classifier
from cnnpipe.seeding import set_global_seed
from cnnpipe.training.fit import fit_model
from cnnpipe.training.outputs import save_model


def _data(n=64):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.random((n, 8, 8, 1), dtype=np.float32) * 0.2
    x[y == 1, 2:6, 2:6] += 0.8  # class 1 has a bright square: learnable in a few steps
    return x, y.astype(np.int32)


class _Crash(Exception):
    pass


class _CrashAfter(keras.callbacks.Callback):
    """Stands in for a kill: raises once ``epoch`` has been checkpointed."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Crash


def _fit(tmp_path, epochs, fingerprint="a", callbacks=()):
    set_global_seed(0)
    x, y = _data()
    fit = FitParams(epochs=epochs, batch_size=16, learning_rate=1e-2, weight_decay=1e-4, schedule="cosine",
                    warmup_epochs=0.5, patience=50, augment=False, steps_per_epoch=None, precision="float32",
                    inter_op_threads=None)
    model = build_classifier((8, 8, 1), 2, (4,), 1, 0.0)
    ds = make_dataset(x, y, batch_size=16, training=True, seed=0)
    val = make_dataset(x, y, batch_size=64, training=False, seed=0)
    return fit_model(
        model, ds, val, fit=fit, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
        steps_per_epoch=4, checkpoint_dir=tmp_path / "ckpt", history_csv=tmp_path / "hist.csv",
        run_fingerprint=fingerprint, callbacks=callbacks,
    )


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_writes_curves_and_cleans_checkpoint(tmp_path):
    result = _fit(tmp_path, epochs=3)
    assert result.epochs_run == 3 and result.resumed_from == 0
    rows = _rows(tmp_path / "hist.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it learns
    assert (tmp_path / "ckpt" / "state.json").exists()  # kept until the model file is in place
    save_model(result.model, tmp_path / "m.keras", checkpoint=tmp_path / "ckpt")
    assert (tmp_path / "m.keras").is_file() and not (tmp_path / "ckpt").exists()


def test_interrupted_fit_resumes_from_last_epoch(tmp_path):
    with pytest.raises(_Crash):
        _fit(tmp_path, epochs=4, callbacks=(_CrashAfter(2),))
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["epoch"] == 2 and (tmp_path / "ckpt" / state["model"]).exists()
    assert not (tmp_path / "hist.csv").exists()  # the declared curves appear only whole
    result = _fit(tmp_path, epochs=4)
    assert result.resumed_from == 2 and result.epochs_run == 4
    assert [int(r["epoch"]) for r in _rows(tmp_path / "hist.csv")] == [0, 1, 2, 3]


def test_stale_checkpoint_is_not_resumed(tmp_path):
    with pytest.raises(_Crash):
        _fit(tmp_path, epochs=3, callbacks=(_CrashAfter(1),))
    result = _fit(tmp_path, epochs=3, fingerprint="different-params")
    assert result.resumed_from == 0 and result.epochs_run == 3


def test_precision_policy_builds_bf16_layers_with_float32_outputs():
    from cnnpipe.training.precision import precision_policy, resolve_precision

    before = keras.mixed_precision.global_policy().name
    with precision_policy("mixed_bfloat16"):
        model = build_classifier((8, 8, 1), 2, (4,), 1, 0.0)
    assert keras.mixed_precision.global_policy().name == before  # restored
    assert model.get_layer("backbone").layers[1].compute_dtype == "bfloat16"
    out = model(np.zeros((1, 8, 8, 1), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("auto") in ("float32", "mixed_bfloat16")


def test_fit_bn_momentum_covers_short_runs_and_leaves_long_ones():
    import keras

    from cnnpipe.models.classifier import build_classifier
    from cnnpipe.training.fit import fit_bn_momentum

    def momenta(model):
        bns = [layer for layer in model.get_layer("backbone").layers + model.layers
               if isinstance(layer, keras.layers.BatchNormalization)]
        return {layer.name: layer.momentum for layer in bns}

    long_run = build_classifier((28, 28, 1), 10, (4, 8), 2, 0.0, dense=8)
    fit_bn_momentum(long_run, 20 * 422)  # the default classifier run: Keras' 0.99 kept
    assert set(momenta(long_run).values()) == {0.99}

    short = build_classifier((28, 28, 1), 10, (4, 8), 2, 0.0, dense=8)
    short.get_layer("backbone").get_layer("block1_1_bn").trainable = False
    assert fit_bn_momentum(short, 120) == pytest.approx(1 - 10 / 120)
    got = momenta(short)
    assert got.pop("block1_1_bn") == 0.99  # frozen: its statistics are not being learned
    assert list(got.values()) == pytest.approx([1 - 10 / 120] * len(got))  # nested backbone and head alike
    assert len(got) == 3  # block2_1, block2_2 and the head
    assert fit_bn_momentum(build_classifier((28, 28, 1), 10, (4,), 1, 0.0), 3) == 0.9  # floor
