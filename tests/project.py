"""A throw-away copy of this project with tiny params, for end-to-end runs of the real stages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import write_tiny_idx_dataset

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("cnnpipe", "stages", "pipelines", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore")

# Small enough for one epoch of every stage in seconds, big enough for every class to
# appear in each scenes split (the transfer stage samples per class).
TINY_PARAMS = {
    "fetch": {"dataset": "idx", "local_dir": None, "system_dir": None, "url": None},
    "prepare": {"val_fraction": 0.2, "scenes": {"n_train": 80, "n_val": 60, "n_test": 40}},
    "train_classifier": {"filters": [4, 8], "fit": {"epochs": 1, "batch_size": 16}},
    "transfer": {"labels_per_class": 1, "val_per_class": 1, "fine_tune_epochs": 1,
                 "fit": {"epochs": 1, "batch_size": 8}},
    "train_localizer": {"fit": {"epochs": 1, "batch_size": 16}},
    "train_unet": {"filters": [4, 8], "fit": {"epochs": 1, "batch_size": 16}},
    "evaluate": {"gradcam_examples": 2, "overlay_examples": 4},
    # One epoch on a few dozen images passes no real floor: with floors at 0 the first versions
    # become @champion, so the end-to-end run exercises promotion too.
    "register": {"min_accuracy": 0.0, "min_transfer_accuracy": 0.0, "min_mean_iou": 0.0, "min_dice": 0.0},
}


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def env() -> dict[str, str]:
    """The environment stages run in: the project's interpreter first on PATH, quiet tools."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    # Runs go to the copy's own embedded store (mlflow.db at its root), not a server or a parent run.
    for var in ("MLFLOW_TRACKING_URI", "CNNPIPE_PARENT_RUN_ID", "CNNPIPE_PREFECT_FLOW_RUN_ID"):
        e.pop(var, None)
    e.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="False", MLFLOW_DISABLE_TELEMETRY="true",
             DO_NOT_TRACK="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    return e


def make_project(tmp: Path, overrides: dict | None = None, n_train: int = 200, n_test: int = 60) -> Path:
    """Copy the project into ``tmp/project`` (a fresh git + DVC repo) with tiny params and a
    tiny IDX dataset as ``fetch.local_dir``."""
    project = tmp / "project"
    project.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, project / name)
    raw = tmp / "tiny-idx"
    write_tiny_idx_dataset(raw, n_train=n_train, n_test=n_test)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = _merge(params, TINY_PARAMS)
    params["fetch"]["local_dir"] = str(raw)
    params = _merge(params, overrides or {})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], project)
    return project


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
