"""Classification prep (split, prepared layout) and the prepare stage end to end on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_params, write_tiny_idx_dataset

from cnnpipe.data.splits import (
    classification_arrays,
    split_classification,
    split_items,
)
from cnnpipe.errors import DataError
from cnnpipe.io import sha256_file

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# split_classification / classification_arrays
# --------------------------------------------------------------------------------------


def test_split_is_stratified_disjoint_and_complete() -> None:
    y = np.repeat(np.arange(4, dtype=np.uint8), [50, 30, 20, 5])
    x = np.zeros((len(y), 2, 2), np.uint8)
    train, val = split_classification(x, y, 0.2, seed=1)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    assert np.bincount(y[val], minlength=4).tolist() == [10, 6, 4, 1]


def test_split_rounds_half_up_and_keeps_one_in_train() -> None:
    y = np.array([0] * 5 + [1] * 2, np.uint8)
    _, val = split_classification(y, y, 0.1, seed=0)  # 0.5 -> 1, 0.2 -> 0
    assert np.bincount(y[val], minlength=2).tolist() == [1, 0]
    _, val = split_classification(y, y, 0.9, seed=0)  # class 1: round(1.8) = 2, capped at 1
    assert np.bincount(y[val], minlength=2).tolist() == [4, 1]


def test_split_is_seeded() -> None:
    y = np.arange(200, dtype=np.uint8) % 10
    a = split_classification(y, y, 0.1, seed=3)
    b = split_classification(y, y, 0.1, seed=3)
    c = split_classification(y, y, 0.1, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(DataError):
        split_classification(np.zeros((3, 2, 2), np.uint8), np.zeros(4, np.uint8), 0.1, seed=0)


def test_classification_arrays_keep_uint8_and_add_a_channel() -> None:
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    items = split_items(x.repeat(10, 0), np.arange(10, dtype=np.uint8), x, np.zeros(1, np.uint8), 0.2, seed=0)
    arrays = classification_arrays(items)
    assert arrays["test"]["images"].shape == (1, 2, 2, 1) and arrays["test"]["images"].dtype == np.uint8
    assert np.array_equal(arrays["test"]["images"][..., 0], x)
    with pytest.raises(DataError, match="expected uint8"):
        classification_arrays(split_items(x.astype(np.float32).repeat(10, 0), np.arange(10, dtype=np.uint8),
                                          x.astype(np.float32), np.zeros(1, np.uint8), 0.2, seed=0))


def test_split_items_keeps_test_order_and_pairs_labels() -> None:
    rng = np.random.default_rng(0)
    y_train = np.arange(100, dtype=np.uint8) % 10
    x_train = np.broadcast_to(y_train[:, None, None], (100, 3, 3)).copy()  # image encodes its label
    x_test, y_test = x_train[:20][::-1].copy(), y_train[:20][::-1].copy()
    items = split_items(x_train, y_train, x_test, y_test, 0.2, seed=int(rng.integers(100)))
    assert items.counts() == {"train": 80, "val": 20, "test": 20}
    arrays = classification_arrays(items)
    for split in ("train", "val", "test"):
        assert np.array_equal(items.images[split][:, 0, 0], items.labels[split])
        assert arrays[split]["labels"].dtype == np.uint8
        assert arrays[split]["images"].shape[1:] == (3, 3, 1)
    assert np.array_equal(items.labels["test"], y_test)


# --------------------------------------------------------------------------------------
# The stage, as DVC runs it
# --------------------------------------------------------------------------------------


def _tiny_project(tmp_path: Path) -> Path:
    raw = tmp_path / "raw" / "fashion-mnist"
    data = write_tiny_idx_dataset(raw, n_train=120, n_test=30)
    (raw / "source.json").write_text(
        json.dumps({"class_names": [f"c{i}" for i in range(10)], "image_shape": list(data.x_train.shape[1:])})
    )
    params = {
        "seed": 11,
        "paths": {k: str(tmp_path / k) for k in ("raw", "prepared", "reports", "models", "metrics", "plots")},
        "prepare": {"val_fraction": 0.2, "scenes": {"n_train": 16, "n_val": 6, "n_test": 6}},
    }
    return write_params(tmp_path / "params.yaml", params)


def _run_stage(params_path: Path, stage: str = "prepare") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--params", str(params_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*.npy"))}


def test_stage_writes_the_contract_and_is_byte_deterministic(tmp_path: Path) -> None:
    params_path = _tiny_project(tmp_path)
    for stage in ("prepare", "prepare_classification"):
        first = _run_stage(params_path, stage)
        assert first.returncode == 0, first.stderr
    prepared = tmp_path / "prepared"
    hashes = _hashes(prepared)
    assert _run_stage(params_path).returncode == 0
    assert _run_stage(params_path, "prepare_classification").returncode == 0
    assert _hashes(prepared) == hashes and len(hashes) == 18

    cls = prepared / "classification"
    meta = json.loads((cls / "meta.json").read_text())
    assert meta["image_shape"] == [28, 28, 1] and meta["seed"] == 11
    # 12 items per class, round(0.2 * 12) = 2 to val.
    assert meta["counts"] == {"train": 100, "val": 20, "test": 30}
    x_train, y_test = np.load(cls / "train_images.npy"), np.load(cls / "test_labels.npy")
    assert x_train.dtype == np.uint8 and x_train.shape == (100, 28, 28, 1)
    assert y_test.dtype == np.uint8 and y_test.shape == (30,)

    scenes = prepared / "scenes"
    smeta = json.loads((scenes / "meta.json").read_text())
    assert smeta["counts"] == {"train": 16, "val": 6, "test": 6} and smeta["canvas"] == 64
    assert smeta["scenes"]["clutter"] == 6
    assert np.load(scenes / "val_images.npy").shape == (6, 64, 64, 1)
    assert np.load(scenes / "test_boxes.npy").dtype == np.float32
    results = json.loads((tmp_path / "reports" / "scenes_validation" / "results.json").read_text())
    assert results["success"] is True
    assert (tmp_path / "reports" / "scenes_validation" / "data_docs").is_dir()


def test_stage_fails_on_bad_scenes_and_writes_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stages.prepare as stage
    from cnnpipe.config import load_params
    from cnnpipe.data.scenes import build
    from cnnpipe.errors import ValidationFailed

    params = load_params(_tiny_project(tmp_path))
    real = build.build_scene_splits

    def corrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        scenes = real(*args, **kwargs)
        scenes["test"]["boxes"][0, 0] = 0.99  # box x2 past the canvas, and off its mask
        return scenes

    monkeypatch.setattr(build, "build_scene_splits", corrupt)
    with pytest.raises(ValidationFailed, match="box"):
        stage.body(params)
    assert not (tmp_path / "prepared").exists()
    results = json.loads((tmp_path / "reports" / "scenes_validation" / "results.json").read_text())
    assert results["success"] is False


def test_stage_without_raw_data_fails_with_one_line(tmp_path: Path) -> None:
    params_path = _tiny_project(tmp_path)
    (tmp_path / "raw" / "fashion-mnist" / "source.json").unlink()
    result = _run_stage(params_path)
    assert result.returncode == 1
    assert "source.json" in result.stderr and "fetch" in result.stderr
