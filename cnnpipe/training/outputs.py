"""What every training task shares: output locations and the model save."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

from cnnpipe.errors import ModelError
from cnnpipe.io import output_error
from cnnpipe.models import CUSTOM_OBJECTS
from cnnpipe.training.distribute import is_chief

# In a checkpoint directory (``cnnpipe.training.checkpoint``): the commit point of each epoch.
CHECKPOINT_STATE = "state.json"


@dataclass(frozen=True)
class TrainOutputs:
    """Where a training task writes: the model file, its curves and its resumable checkpoint."""

    model: Path
    history_csv: Path
    checkpoint_dir: Path

    @classmethod
    def named(cls, models_dir: str | Path, plots_dir: str | Path, name: str) -> TrainOutputs:
        """``<models>/<name>.keras``, ``<plots>/history/<name>.csv``, ``<models>/.checkpoints/<name>``."""
        models_dir, plots_dir = Path(models_dir), Path(plots_dir)
        return cls(
            model=models_dir / f"{name}.keras",
            history_csv=plots_dir / "history" / f"{name}.csv",
            checkpoint_dir=models_dir / ".checkpoints" / name,
        )


def save_model(model: keras.Model, path: Path, checkpoint: Path | None = None) -> None:
    """Save a ``.keras`` file atomically (temp file beside it, then rename), then remove
    ``checkpoint``, the resumable checkpoint ``model`` was trained in.

    The checkpoint goes only once the file is in place: a kill or a full disk during the save
    leaves it, and the next run resumes at the last epoch instead of training again.
    Under ``train.strategy: multi_worker`` only the chief writes: every worker holds the same
    trainable weights, and two writers of one shared path would race.
    """
    if not is_chief():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.stem}.*.keras"):  # left by a save killed half-way
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o644)
    except OSError as err:
        raise output_error(path, err) from err
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):  # full or read-only disk: name the file, keep the old one
            raise output_error(path, err) from err
        raise
    if checkpoint is not None:
        remove_checkpoint(checkpoint)


def remove_checkpoint(directory: Path) -> None:
    """Remove a finished run's checkpoint, ``state.json`` first: a kill half-way leaves epoch
    files that no state names (a fresh start), never a state naming removed files."""
    (directory / CHECKPOINT_STATE).unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)


def load_model(path: Path, producer: str) -> keras.Model:
    """Load a ``.keras`` model in safe mode (no Lambda bytecode); errors name the file.

    Safe mode resolves this project's custom layers by registered name: ``CUSTOM_OBJECTS``.
    """
    if not path.exists():
        raise ModelError(f"{path}: missing; it is written by the {producer!r} stage (run `dvc repro {producer}`)")
    if not zipfile.is_zipfile(path):  # else Keras says "File not found" of a file that is there
        raise ModelError(f"{path}: not a loadable Keras model: not a valid Keras archive (a .keras file is a "
                         f"zip archive; this one is truncated, corrupt or another kind of file); it is "
                         f"written by the {producer!r} stage: run `dvc repro -f {producer}`")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True, custom_objects=CUSTOM_OBJECTS)
    except Exception as err:  # keras raises ValueError/OSError/zipfile errors for junk files
        raise ModelError(f"{path}: not a loadable Keras model ({type(err).__name__}: {err})") from err
