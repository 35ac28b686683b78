"""One training routine for every model: loss, metrics, callbacks and optimizer are arguments.

It adds what every stage needs: AdamW with warm-up + cosine decay, a checkpoint at the end
of each epoch (written atomically) from which an interrupted run resumes, early stopping
on the validation loss with the best weights restored, and a CSV of the curves. The
checkpoint format lives in ``checkpoint``, the dtype policy in ``precision``, and the one
Keras private-API call (building for a distribution strategy) in ``_keras_compat``, a module
private to ``cnnpipe.training``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from cnnpipe.config import FitParams
from cnnpipe.io import atomic_file, output_error
from cnnpipe.training._keras_compat import build_for_distribution
from cnnpipe.training.checkpoint import (
    HISTORY,
    EpochCheckpoint,
    ResumableEarlyStopping,
    resume,
    trim_history,
)
from cnnpipe.training.curves import write_curves_png
from cnnpipe.training.distribute import is_chief


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
        """The facts every training stage reports in ``metrics/train/<model>.json``: a function of
        the commit and seed alone, so a reproduced run gives the same file (and dvc.lock hash)."""
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "params": self.model.count_params(),
        }

    def timings(self) -> dict[str, Any]:
        """What differs run to run for the same result: the epoch time and the epoch an
        interrupted run resumed at. Stages log them to MLflow and ``<reports>/timings/``, not DVC."""
        return {"seconds_per_epoch": round(self.seconds_per_epoch, 2), "resumed_from_epoch": self.resumed_from}


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


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
    stale checkpoint is never resumed. A resumed run skips the batches the finished epochs drew
    from ``train`` (a seeded stream, built afresh for each call), so it ends with the weights of a
    run never interrupted. The checkpoint stays: ``save_model(..., checkpoint=)`` removes it
    once the model file is in place. Under a multi-worker strategy only the chief writes
    ``checkpoint_dir`` and ``history_csv``.
    """
    # Under a strategy (train.strategy) the model was built in its scope; compiling, restoring
    # and fitting there too make Keras train it distributed. The default strategy is a no-op.
    # work_dir/work_csv: the paths this process writes (copies on a non-chief worker).
    with model.distribute_strategy.scope(), _worker_paths(checkpoint_dir, history_csv) as (work_dir, work_csv):
        fit_bn_momentum(model, fit.epochs * steps_per_epoch)
        model.compile(
            optimizer=make_optimizer(fit, steps_per_epoch, learning_rate),
            loss=loss,
            loss_weights=loss_weights,
            metrics=metrics,
        )
        if tf.distribute.has_strategy():
            build_for_distribution(model, train)
        early = ResumableEarlyStopping(monitor=monitor, patience=fit.patience, restore_best_weights=True)
        initial_epoch = resume(work_dir, run_fingerprint, model, early)
        # The shuffle and augmentation streams are seeded but stateful: replaying the finished
        # epochs' draws puts them where the interrupted run was. Skipped batches cost input work
        # only (read, shuffle, augment), no training step; per-epoch seeds would have changed
        # every uninterrupted run's result.
        train = train.skip(initial_epoch * steps_per_epoch)

        # The curves grow beside the checkpoint and reach ``history_csv`` (a declared output) only
        # whole, when training ends.
        curves = work_dir / HISTORY
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(work_dir, err) from err
        if initial_epoch == 0:
            curves.unlink(missing_ok=True)
        else:
            trim_history(curves, initial_epoch)
        timer = _EpochTimer()
        all_callbacks = [
            timer,
            keras.callbacks.CSVLogger(str(curves), append=initial_epoch > 0),
            early,
            EpochCheckpoint(work_dir, run_fingerprint, early),
            *callbacks,
        ]
        stopped = early.resume_state is not None and early.resume_state["wait"] >= fit.patience
        if initial_epoch >= fit.epochs or stopped:
            history = {}
            early.on_train_begin()  # nothing left to fit: early stopping's saved memory, best weights too
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
            with atomic_file(work_csv, "wb") as f:
                f.write(curves.read_bytes())
            write_curves_png(work_csv, work_csv.with_suffix(".png"))  # the same curves, viewable offline
        return FitResult(
            model=model,
            history=history,
            epochs_run=initial_epoch + len(next(iter(history.values()), [])),
            resumed_from=initial_epoch,
            best_epoch=int(early.best_epoch) + 1,
            seconds_per_epoch=sum(timer.seconds) / len(timer.seconds) if timer.seconds else 0.0,
        )
