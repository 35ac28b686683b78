"""The resumable checkpoint of :func:`cnnpipe.training.fit.fit_model`, written each epoch.

A directory holds one committed epoch: the model weights, optimizer variables and random
generator states (dropout's) as a plain ``.npz``, early stopping's best weights as another, and
``state.json`` (written last, atomically) naming them with the run's fingerprint and early
stopping's memory. The curves CSV grows beside them. Resuming restores all of it, so a killed
run continues where it stopped and, with the input stream skipped to the same step
(``fit_model``), ends with the weights of a run never interrupted.

Kept instead of ``keras.callbacks.BackupAndRestore``: a ``.npz`` save costs 4-6x less than
Keras' files (0.025 s vs 0.15 s for a ``.keras``, 10-15% of a short epoch, benchmarks/ overhead;
0.14 s vs 0.60 s for its ``save_weights`` on the transfer model), and Keras' callback neither
keeps EarlyStopping's best/wait/best weights nor refuses a checkpoint of other params or data.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cnnpipe.errors import OutputError
from cnnpipe.io import atomic_file, output_error, read_json, write_json
from cnnpipe.training.outputs import CHECKPOINT_STATE as STATE

log = logging.getLogger("cnnpipe")

HISTORY = "history.csv"  # the curves so far, beside the checkpoint


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
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


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the full model (weights + optimizer state) and the callbacks' state each epoch.

    Each epoch's files get their own names and ``state.json``, written last and atomically,
    names them: a kill at any instant leaves a state that points at complete files of one
    epoch. A full or read-only disk stops training with an :class:`OutputError`.
    """

    def __init__(self, directory: Path, fingerprint: str, early: ResumableEarlyStopping):
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
            _save_arrays(tmp_model, self.directory / model_file, self.model.get_weights(), optimizer,
                         [np.asarray(v) for v in rng_states(self.model)])
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


def rng_states(model: keras.Model) -> list[Any]:
    """The state variables of the model's random generators (one per Dropout layer), in order.

    They are not weights, so ``get_weights`` misses them; without them a resumed run would draw
    epoch 0's dropout masks again.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights and v.path.endswith("seed_generator_state")]


def _save_arrays(
    tmp: Path, path: Path, weights: Sequence[Any], optimizer: Sequence[Any], rng: Sequence[Any] = ()
) -> None:
    """Model weights ``w<i>``, optimizer variables ``o<i>`` and generator states ``r<i>`` as one
    .npz, written to ``tmp`` (flushed to disk) and renamed to ``path``."""
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer)})
    arrays.update({f"r{i}": np.asarray(v) for i, v in enumerate(rng)})
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_arrays(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The weights, optimizer variables and generator states saved by :func:`_save_arrays`."""
    with np.load(path, allow_pickle=False) as data:
        read = lambda prefix: [data[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in data.files))]
        return read("w"), read("o"), read("r")


def trim_history(path: Path, epochs: int) -> None:
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


def load_checkpoint(directory: Path, state: dict[str, Any], model: keras.Model, early: ResumableEarlyStopping) -> int:
    """Load the committed epoch's weights, optimizer state and early-stopping memory into
    ``model``/``early``; returns the number of completed epochs."""
    saved = directory / state.get("model", "last.keras")
    rng: list[np.ndarray] = []
    if saved.suffix == ".npz":
        weights, optimizer, rng = _load_arrays(saved)
    else:  # a checkpoint written before checkpoints were .npz
        resumed = keras.saving.load_model(saved)
        weights, optimizer = resumed.get_weights(), [np.asarray(v) for v in resumed.optimizer.variables]
    model.set_weights(weights)
    if rng:  # absent from checkpoints written before they were saved
        for var, value in zip(rng_states(model), rng, strict=True):
            var.assign(value)
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


def resume(directory: Path, run_fingerprint: str, model: keras.Model, early: ResumableEarlyStopping) -> int:
    """Restore the checkpoint in ``directory`` into ``model``/``early`` when it was written by
    this run (same fingerprint); returns the completed epochs, 0 when starting fresh.

    A stale (other params or data) or unreadable checkpoint is removed, saying why.
    """
    state_path = directory / STATE
    if not state_path.exists():
        return 0
    state = read_json(state_path)
    if state.get("fingerprint") != run_fingerprint:
        log.info("ignoring a stale checkpoint in %s (different params or data)", directory)
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    try:
        initial_epoch = load_checkpoint(directory, state, model, early)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: start over, say why
        log.warning("ignoring an unreadable checkpoint in %s (%s: %s); training from epoch 0",
                    directory, type(err).__name__, err)
        early.resume_state = None
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    log.info("resuming from checkpoint at epoch %d (%s)", initial_epoch, directory)
    return initial_epoch
