"""One training routine for every model: loss, metrics, callbacks and optimizer are arguments.

It adds what every stage needs: AdamW with warm-up + cosine decay, a checkpoint at the end
of each epoch (written atomically) from which an interrupted run resumes, early stopping
on the validation loss with the best weights restored, and a CSV of the curves.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cnnpipe.config import FitParams
from cnnpipe.errors import OutputError
from cnnpipe.io import atomic_file, output_error, read_json, write_json
from cnnpipe.training.distribute import is_chief

log = logging.getLogger("cnnpipe")

STATE = "state.json"  # in the checkpoint directory: the commit point of each epoch
HISTORY = "history.csv"  # the curves so far, beside the checkpoint


def cpu_has_native_bf16() -> bool:
    """True where the CPU advertises bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` on CPUs with native bfloat16, else ``float32``."""
    if precision == "auto":
        return "mixed_bfloat16" if cpu_has_native_bf16() else "float32"
    return precision


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build models under a Keras dtype policy; the layers keep it, the global is restored.

    Output layers are built with ``dtype="float32"``, so losses and predictions stay float32.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_optimizer(fit: FitParams, steps_per_epoch: int, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    """AdamW; with ``schedule: cosine`` a linear warm-up then cosine decay to zero."""
    lr = fit.learning_rate if learning_rate is None else learning_rate
    if fit.schedule == "cosine":
        total = max(1, fit.epochs * steps_per_epoch)
        warmup = min(int(fit.warmup_epochs * steps_per_epoch), total - 1)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=total - warmup,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    return keras.optimizers.AdamW(learning_rate=lr, weight_decay=fit.weight_decay)


@dataclass(frozen=True)
class FitResult:
    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    resumed_from: int  # 0 when training started fresh
    best_epoch: int
    seconds_per_epoch: float  # mean wall time of the epochs run here (validation included)

    def summary(self) -> dict[str, Any]:
        """The facts every training stage reports in ``metrics/train/<model>.json``."""
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "resumed_from_epoch": self.resumed_from,
            "seconds_per_epoch": round(self.seconds_per_epoch, 2),
            "params": self.model.count_params(),
        }


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose memory (best value, epoch, wait, weights) survives a resume.

    Keras resets that state in ``on_train_begin``; a resumed run re-applies the saved one.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.resume_state: dict[str, Any] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.resume_state is not None:
            for key, value in self.resume_state.items():
                setattr(self, key, value)


class _EpochCheckpoint(keras.callbacks.Callback):
    """Save the full model (weights + optimizer state) and the callbacks' state each epoch.

    Each epoch's files get their own names and ``state.json``, written last and atomically,
    names them: a kill at any instant leaves a state that points at complete files of one
    epoch. A full or read-only disk stops training with an :class:`OutputError`.
    """

    def __init__(self, directory: Path, fingerprint: str, early: _ResumableEarlyStopping):
        super().__init__()
        self.directory = directory
        self.fingerprint = fingerprint
        self.early = early

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        # Plain arrays (.npz), not model.save: a .keras file costs ~6x more to write, which is
        # 10-15% of a short epoch (the transfer stage's are ~2 s; see benchmarks/, overhead).
        model_file, best_file = f"epoch-{done:04d}.npz", f"best-{done:04d}.npz"
        tmp_model, tmp_best = self.directory / f".{model_file}.tmp", self.directory / f".{best_file}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            optimizer = [np.asarray(v) for v in self.model.optimizer.variables]
            _save_arrays(tmp_model, self.directory / model_file, self.model.get_weights(), optimizer)
            if self.early.best_weights is None:
                best_file = None
            else:
                _save_arrays(tmp_best, self.directory / best_file, self.early.best_weights, [])
            write_json(
                self.directory / STATE,
                {
                    "fingerprint": self.fingerprint,
                    "epoch": done,
                    "model": model_file,
                    "best_weights": best_file,
                    "best": None if self.early.best is None else float(self.early.best),
                    "best_epoch": int(self.early.best_epoch),
                    "wait": int(self.early.wait),
                },
            )
        except (OSError, OutputError) as err:
            for tmp in (tmp_model, tmp_best):
                tmp.unlink(missing_ok=True)
            raise output_error(self.directory, err) from err
        for old in [*self.directory.glob("epoch-*"), *self.directory.glob("best-*")]:
            if old.name not in (model_file, best_file):  # no longer named by state.json
                old.unlink(missing_ok=True)


def _save_arrays(tmp: Path, path: Path, weights: Sequence[Any], optimizer: Sequence[Any]) -> None:
    """Model weights ``w<i>`` and optimizer variables ``o<i>`` as one .npz, written to ``tmp``
    (flushed to disk) and renamed to ``path``."""
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer)})
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_arrays(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The weights and optimizer variables saved by :func:`_save_arrays`, in order."""
    with np.load(path, allow_pickle=False) as data:
        count = lambda prefix: sum(1 for k in data.files if k.startswith(prefix))  # noqa: E731
        return [data[f"w{i}"] for i in range(count("w"))], [data[f"o{i}"] for i in range(count("o"))]


def _trim_history(path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs: a kill can leave a row (or
    half of one) of an epoch whose checkpoint was never committed."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, kept = rows[0], [rows[0]]
    for row in rows[1:]:
        if len(row) == len(header) and row[0].isdigit() and int(row[0]) < epochs:
            kept.append(row)
    with atomic_file(path, "w") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)


def _load_checkpoint(directory: Path, state: dict[str, Any], model: keras.Model, early: _ResumableEarlyStopping) -> int:
    """Load the committed epoch's weights, optimizer state and early-stopping memory into
    ``model``/``early``; returns the number of completed epochs."""
    saved = directory / state.get("model", "last.keras")
    if saved.suffix == ".npz":
        weights, optimizer = _load_arrays(saved)
    else:  # a checkpoint written before checkpoints were .npz
        resumed = keras.saving.load_model(saved)
        weights, optimizer = resumed.get_weights(), [np.asarray(v) for v in resumed.optimizer.variables]
    model.set_weights(weights)
    model.optimizer.build(model.trainable_variables)
    for var, value in zip(model.optimizer.variables, optimizer, strict=True):
        var.assign(value)
    # Restore early stopping's memory so the resumed run stops where a straight run would.
    early.resume_state = {"best": state["best"], "best_epoch": state["best_epoch"], "wait": state["wait"]}
    best = state.get("best_weights", "best.weights.h5")
    if best and (directory / best).exists():
        if best.endswith(".npz"):
            early.resume_state["best_weights"] = _load_arrays(directory / best)[0]
        else:
            current = model.get_weights()
            model.load_weights(directory / best)
            early.resume_state["best_weights"] = model.get_weights()
            model.set_weights(current)
    return int(state["epoch"])


def _build_for_distribution(model: keras.Model, train: tf.data.Dataset) -> None:
    """Build the compiled loss, metrics and optimizer from the dataset's element spec, in the
    strategy's scope, then let ``fit`` take the strategy from that scope.

    Keras 3.x otherwise reduces the first distributed batch to build them, which fails under
    MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)",
    keras-team/keras#20585). Building from symbolic inputs is what Keras itself does; with
    the model's own strategy reference cleared, ``fit`` (called inside ``strategy.scope()``)
    skips that step and still trains on the strategy of the enclosing scope.
    """
    spec = tf.nest.map_structure(lambda s: keras.KerasTensor(s.shape, s.dtype.name), train.element_spec)
    model._symbolic_build(data_batch=spec)
    model._distribute_strategy = None


@contextlib.contextmanager
def _worker_paths(checkpoint_dir: Path, history_csv: Path) -> Iterator[tuple[Path, Path]]:
    """The checkpoint dir and curves path this process writes: the real ones on the chief (or
    without a cluster); on other workers, copies in a temp dir removed afterwards.

    TensorFlow's multi-worker rule: every worker runs the same callbacks (saving may need
    them all), but only the chief's files are kept. A worker resumes from the chief's
    checkpoint, so all of them start at the same epoch.
    """
    if is_chief():
        yield checkpoint_dir, history_csv
        return
    with tempfile.TemporaryDirectory(prefix="cnnpipe-worker-") as tmp:
        local = Path(tmp) / "checkpoint"
        if checkpoint_dir.is_dir():
            shutil.copytree(checkpoint_dir, local)
        yield local, Path(tmp) / history_csv.name


def fingerprint(*parts: Any) -> str:
    """A short hash of everything that must match for a checkpoint to be resumed."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fit_bn_momentum(model: keras.Model, total_steps: int) -> float:
    """Lower the momentum of trainable BatchNorm layers so their moving statistics cover the run.

    With momentum m, a moving average still holds m**N of its initial value (mean 0, variance
    1) after N steps: 0.99**120 = 0.30, so a 120-step run (the quick profile) predicts with
    statistics mostly made up, and scores chance at inference although it trains fine. The
    momentum becomes at most 1 - 10/N (m**N ~ e**-10), never below 0.9; long runs (N >= 1000)
    keep Keras' 0.99. Returns the momentum used.
    """
    momentum = max(0.9, 1.0 - 10.0 / max(total_steps, 1))
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and layer.momentum > momentum:
            layer.momentum = momentum
    return momentum


def fit_model(
    model: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    *,
    fit: FitParams,
    loss: Any,
    metrics: Any = None,
    steps_per_epoch: int,
    checkpoint_dir: Path,
    history_csv: Path,
    run_fingerprint: str,
    learning_rate: float | None = None,
    loss_weights: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    monitor: str = "val_loss",
) -> FitResult:
    """Compile and fit ``model``; resume from ``checkpoint_dir`` when its fingerprint matches.

    ``run_fingerprint`` must change whenever the data, params or architecture change, so a
    stale checkpoint is never resumed. The checkpoint directory is removed on success. Under a
    multi-worker strategy only the chief writes ``checkpoint_dir`` and ``history_csv``.
    """
    # Under a strategy (train.strategy) the model was built in its scope; compiling, restoring
    # and fitting there too make Keras train it distributed. The default strategy is a no-op.
    with model.distribute_strategy.scope(), _worker_paths(checkpoint_dir, history_csv) as (checkpoint_dir, history_csv):
        fit_bn_momentum(model, fit.epochs * steps_per_epoch)
        model.compile(
            optimizer=make_optimizer(fit, steps_per_epoch, learning_rate),
            loss=loss,
            loss_weights=loss_weights,
            metrics=metrics,
        )
        if tf.distribute.has_strategy():
            _build_for_distribution(model, train)
        early = _ResumableEarlyStopping(monitor=monitor, patience=fit.patience, restore_best_weights=True)

        initial_epoch = 0
        state_path = checkpoint_dir / STATE
        if state_path.exists():
            state = read_json(state_path)
            if state.get("fingerprint") == run_fingerprint:
                try:
                    initial_epoch = _load_checkpoint(checkpoint_dir, state, model, early)
                    log.info("resuming from checkpoint at epoch %d (%s)", initial_epoch, checkpoint_dir)
                except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: start over, say why
                    log.warning("ignoring an unreadable checkpoint in %s (%s: %s); training from epoch 0",
                                checkpoint_dir, type(err).__name__, err)
                    early.resume_state = None
                    shutil.rmtree(checkpoint_dir, ignore_errors=True)
            else:
                log.info("ignoring a stale checkpoint in %s (different params or data)", checkpoint_dir)
                shutil.rmtree(checkpoint_dir, ignore_errors=True)

        # The curves grow beside the checkpoint and reach ``history_csv`` (a declared output) only
        # whole, when training ends.
        curves = checkpoint_dir / HISTORY
        try:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(checkpoint_dir, err) from err
        if initial_epoch == 0:
            curves.unlink(missing_ok=True)
        else:
            _trim_history(curves, initial_epoch)
        timer = _EpochTimer()
        all_callbacks = [
            timer,
            keras.callbacks.CSVLogger(str(curves), append=initial_epoch > 0),
            early,
            _EpochCheckpoint(checkpoint_dir, run_fingerprint, early),
            *callbacks,
        ]
        stopped = early.resume_state is not None and early.resume_state["wait"] >= fit.patience
        if initial_epoch >= fit.epochs or stopped:
            history = {}
            if early.resume_state and "best_weights" in early.resume_state:
                early.best_weights = early.resume_state["best_weights"]
        else:
            history = model.fit(
                train,
                validation_data=val,
                epochs=fit.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=all_callbacks,
                shuffle=False,  # tf.data shuffles (seeded); Keras would only warn
                verbose=2,
            ).history
        if early.best_weights is not None:
            model.set_weights(early.best_weights)
        if curves.exists():
            with atomic_file(history_csv, "wb") as f:
                f.write(curves.read_bytes())
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return FitResult(
            model=model,
            history=history,
            epochs_run=initial_epoch + len(next(iter(history.values()), [])),
            resumed_from=initial_epoch,
            best_epoch=int(early.best_epoch) + 1,
            seconds_per_epoch=sum(timer.seconds) / len(timer.seconds) if timer.seconds else 0.0,
        )
