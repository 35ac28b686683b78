"""Resume gives the run that was interrupted (issue 15).

A ``kill -9`` during epoch k, then a re-run, must end with the weights, curves and metrics of a
run never interrupted: the resumed run skips the batches (shuffle order and augmentation seeds)
the finished epochs drew, and restores dropout's generator state. A kill during the final save
must keep the checkpoint, so the re-run resumes at the last epoch instead of training again.

The kills are real: the stage process sends itself SIGKILL at a chosen point (after epoch 2 is
committed; half-way through writing the model file), so no clean-up of any kind runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from project import env, make_project, run

from cnnpipe.config import AugmentParams, FitParams
from cnnpipe.data.augment import augment_with_boxes
from cnnpipe.data.pipeline import make_sharded_dataset
from cnnpipe.data.prepared import PreparedSet
from cnnpipe.io import read_json, save_array, write_json
from cnnpipe.seeding import set_global_seed
from cnnpipe.training.fit import fit_model

EPOCHS = 4
MODEL, SUMMARY, CURVES = "models/classifier.keras", "metrics/train/classifier.json", "plots/history/classifier.csv"
CHECKPOINT = Path("models/.checkpoints/classifier")

# Run the classifier stage with a hook that kills the process (SIGKILL, no clean-up) at a point.
_HOOKED_STAGE = """
import os, runpy, signal, sys
where, stage = sys.argv[1], sys.argv[2]
sys.argv = [stage, "--params", "params.yaml"]
if where.startswith("epoch-"):
    from cnnpipe.training import checkpoint
    epoch, original = int(where[6:]), checkpoint.EpochCheckpoint.on_epoch_end
    def on_epoch_end(self, e, logs=None):
        original(self, e, logs)  # epoch e + 1 committed
        if e + 1 == epoch:
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.EpochCheckpoint.on_epoch_end = on_epoch_end
elif where == "save":
    import keras
    def save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK half a zip")  # a torn temp file, then the kill
        os.kill(os.getpid(), signal.SIGKILL)
    keras.Model.save = save
runpy.run_module(stage, run_name="__main__", alter_sys=True)
"""


def _stage(project: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stages.train_classifier", "--params", "params.yaml"]
    if kill_at:
        cmd = [sys.executable, "-c", _HOOKED_STAGE, kill_at, "stages.train_classifier"]
    return subprocess.run(cmd, check=False, cwd=project, env=env(), capture_output=True, text=True, timeout=600)


def _weights_hash(path: Path) -> str:
    model = keras.saving.load_model(path, compile=False, safe_mode=False)
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _outputs(project: Path) -> dict:
    """The weights, the model file's bytes, the curves and the summary a run left (timings and the
    epoch resumed at are in reports/timings, not the summary)."""
    summary = read_json(project / SUMMARY)
    with open(project / CURVES) as f:
        curves = list(csv.reader(f))
    return {"weights": _weights_hash(project / MODEL), "model_bytes": hashlib.sha256((project / MODEL).read_bytes()).hexdigest(),
            "curves": curves, "summary": summary}


def _clear(project: Path) -> None:
    for rel in (MODEL, SUMMARY, CURVES):
        (project / rel).unlink(missing_ok=True)
    shutil.rmtree(project / CHECKPOINT, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project, prepared, with the classifier at its defaults (dropout 0.3, flip and
    shift augmentation) for ``EPOCHS`` epochs, no early stop."""
    path = make_project(tmp_path_factory.mktemp("resume"),
                        {"train_classifier": {"fit": {"epochs": EPOCHS, "patience": 1000, "augment": True}}})
    run(["dvc", "repro", "prepare_classification"], path)
    return path


@pytest.fixture(scope="module")
def straight(project: Path) -> dict:
    """The outputs of a run never interrupted."""
    _clear(project)
    result = _stage(project)
    assert result.returncode == 0, result.stderr[-3000:]
    out = _outputs(project)
    assert len(out["curves"]) == EPOCHS + 1 and out["summary"]["epochs_run"] == EPOCHS
    assert not (project / CHECKPOINT).exists()
    return out


def test_kill_9_after_epoch_2_then_resume_gives_the_uninterrupted_run(project, straight):
    _clear(project)
    killed = _stage(project, kill_at="epoch-2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert read_json(project / CHECKPOINT / "state.json")["epoch"] == 2
    assert not (project / MODEL).exists()

    resumed = _stage(project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint at epoch 2" in resumed.stdout + resumed.stderr
    assert read_json(project / "reports/timings/classifier.json")["resumed_from_epoch"] == 2
    assert _outputs(project) == straight  # bit-identical weights, the same curves and metrics
    assert not (project / CHECKPOINT).exists()  # removed once the model was in place


def test_kill_9_during_the_final_save_keeps_the_checkpoint_and_the_rerun_resumes_at_the_end(project, straight):
    _clear(project)
    killed = _stage(project, kill_at="save")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (project / MODEL).exists()  # the torn file is a temp file, never the model
    state = read_json(project / CHECKPOINT / "state.json")
    assert state["epoch"] == EPOCHS and (project / CHECKPOINT / state["model"]).is_file()

    resumed = _stage(project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from checkpoint at epoch {EPOCHS}" in resumed.stdout + resumed.stderr
    assert _outputs(project) == straight  # no epoch retrained, the same model
    assert not (project / CHECKPOINT).exists()
    assert not list((project / "models").glob(".classifier.*"))  # the killed save's temp file is gone


# --------------------------------------------------------------------------------------
# Streamed (sharded) splits resume the same way
# --------------------------------------------------------------------------------------


class _Crash(Exception):
    pass


class _CrashAfter(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise _Crash


def _write_shards(directory: Path, sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    for k, n in enumerate(sizes):
        labels = rng.integers(0, 2, n)
        images = (rng.random((n, 8, 8, 1)) * 60).astype(np.uint8)
        images[labels == 1, 2:6, 2:6] = 220
        save_array(directory / f"train_images-{k:05d}.npy", images)
        save_array(directory / f"train_labels-{k:05d}.npy", labels.astype(np.uint8))
        save_array(directory / f"train_boxes-{k:05d}.npy", np.tile([0.25, 0.25, 0.5, 0.5], (n, 1)).astype(np.float32))
    write_json(directory / "meta.json", {"class_names": ["0", "1"], "shards": {"train": sizes}})


def _sharded_fit(data: Path, work: Path, callbacks=()) -> keras.Model:
    set_global_seed(0)
    shards = PreparedSet.open(data).split("train")
    targets = lambda s: {"class": s.labels.astype(np.int32), "box": s.boxes}
    aug_params = AugmentParams(flip=True, shift=0.1, rotation=0.0, zoom=0.0)

    def aug(x, y, s):
        x, box = augment_with_boxes(x, y["box"], aug_params, s)
        return x, {"class": y["class"], "box": box}

    train = make_sharded_dataset(shards, targets, batch_size=8, training=True, seed=3, augment=aug)
    val = make_sharded_dataset(shards, targets, batch_size=16, training=False, seed=3)
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs)))
    model = keras.Model(inputs, {"class": keras.layers.Dense(2, activation="softmax", name="class")(hidden),
                                 "box": keras.layers.Dense(4, activation="sigmoid", name="box")(hidden)})
    fit = FitParams(epochs=4, batch_size=8, learning_rate=1e-2, weight_decay=1e-4, schedule="cosine",
                    warmup_epochs=0.5, patience=50, augment=True, steps_per_epoch=None, precision="float32",
                    inter_op_threads=None)
    fit_model(model, train, val, fit=fit, loss={"class": "sparse_categorical_crossentropy", "box": "mse"},
              steps_per_epoch=5, checkpoint_dir=work / "ckpt", history_csv=work / "h.csv",
              run_fingerprint="sharded", callbacks=callbacks)
    return model


def test_a_streamed_split_resumes_to_the_uninterrupted_weights(tmp_path):
    _write_shards(tmp_path / "data", [13, 11, 9])  # 33 scenes: epochs end mid-shard and mid-pass
    straight = _sharded_fit(tmp_path / "data", tmp_path / "a").get_weights()
    with pytest.raises(_Crash):
        _sharded_fit(tmp_path / "data", tmp_path / "b", callbacks=(_CrashAfter(2),))
    assert json.loads((tmp_path / "b/ckpt/state.json").read_text())["epoch"] == 2
    resumed = _sharded_fit(tmp_path / "data", tmp_path / "b").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(straight, resumed, strict=True))
