"""What every training task shares: output locations and the model save."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from cnnpipe.errors import ModelError
from cnnpipe.io import output_error
from cnnpipe.models import CUSTOM_OBJECTS
from cnnpipe.training.distribute import is_chief

# In a checkpoint directory (``cnnpipe.training.checkpoint``): the commit point of each epoch.
CHECKPOINT_STATE = "state.json"

# A .keras archive's entries carry their write time and its metadata.json the save time; both
# are pinned (the zip format's earliest date) so the same weights give the same bytes, and
# dvc.lock the same hash, on every run.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_METADATA = "metadata.json"
_CONFIG = "config.json"


def _renumber_shared_ids(node: Any, ids: dict[int, int]) -> Any:
    """``config.json`` links objects shared between layers by ``shared_object_id``, Python's
    ``id()`` of the object (a memory address, new each run): number them 1, 2, ... in order of
    first appearance instead (the loader only matches them up)."""
    if isinstance(node, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" and isinstance(v, int)
                    else _renumber_shared_ids(v, ids)) for k, v in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_ids(v, ids) for v in node]
    return node


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
    raw = Path(tmp).with_suffix(".raw.keras")
    try:
        model.save(raw)
        write_deterministic_archive(raw, Path(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raw.unlink(missing_ok=True)
        if isinstance(err, OSError):  # full or read-only disk: name the file, keep the old one
            raise output_error(path, err) from err
        raise
    if checkpoint is not None:
        remove_checkpoint(checkpoint)


def write_deterministic_archive(src: Path, dst: Path) -> None:
    """Rewrite the ``.keras`` archive ``src`` as ``dst`` with nothing that depends on when or in
    which process it was written: entries in name order, each dated 1980-01-01 with mode 0644,
    ``metadata.json`` without its ``date_saved``, ``config.json``'s shared-object ids numbered in
    order; then remove ``src``. The weights file inside (HDF5) records no object times: h5py's
    ``track_times`` is off unless asked for, and Keras does not ask.
    """
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for entry in sorted(zin.infolist(), key=lambda e: e.filename):
            info = zipfile.ZipInfo(entry.filename, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix: the same bytes from every platform
            if entry.filename == _METADATA:
                meta = json.loads(zin.read(entry))
                meta.pop("date_saved", None)
                zout.writestr(info, json.dumps(meta, sort_keys=True))
                continue
            if entry.filename == _CONFIG:
                zout.writestr(info, json.dumps(_renumber_shared_ids(json.loads(zin.read(entry)), {})))
                continue
            info.file_size = entry.file_size
            with zin.open(entry) as fin, zout.open(info, "w", force_zip64=entry.file_size > 2**31) as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
    src.unlink()


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
