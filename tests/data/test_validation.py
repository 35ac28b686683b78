"""The GX suites pass on good tiny data and fail, naming the expectation, on each planted defect;
reports and the validate stage end to end on a tiny raw directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_params

from cnnpipe.data.validation.gx import raise_if_failed, write_report
from cnnpipe.data.validation.manifest import classification_manifest, scenes_manifest
from cnnpipe.data.validation.suites import (
    class_balance_table,
    validate_classification,
    validate_scenes,
)
from cnnpipe.errors import ValidationFailed

ROOT = Path(__file__).resolve().parents[2]
N_CLASSES = 4
CLASS_NAMES = [f"class{i}" for i in range(N_CLASSES)]
SIDE = 8


def _split(per_class, seed, side=SIDE):
    rng = np.random.default_rng(seed)
    n = per_class * N_CLASSES
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    labels = (np.arange(n) % N_CLASSES).astype(np.uint8)
    return images, labels


def _validate(df, tolerance=0.1):
    return validate_classification(
        df, class_names=CLASS_NAMES, image_shape=(SIDE, SIDE), balance_tolerance=tolerance
    )


def _failed(report):
    return {(f.expectation, f.column, f.table) for f in report.failures}


@pytest.fixture(scope="module")
def good():
    return classification_manifest({"train": _split(3, 0), "test": _split(1, 1)})


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


def test_good_classification_passes(good):
    report = _validate(good)
    assert report.success and report.failures == []
    raise_if_failed(report, "tiny")  # no-op
    assert report.observed["class_shares"]["train"] == {name: 0.25 for name in CLASS_NAMES}
    assert json.dumps(report.to_dict())  # JSON-able as is


def test_label_out_of_range_fails(good):
    df = good.copy()
    df.loc[[1, 2, 5], "label"] = 12
    report = _validate(df, tolerance=1.0)  # only the label check should trip
    assert _failed(report) == {("expect_column_values_to_be_in_set", "label", "manifest")}
    with pytest.raises(ValidationFailed) as err:
        raise_if_failed(report, "tiny")
    assert "expect_column_values_to_be_in_set(label): 3 unexpected values, e.g. [12]" in str(err.value)
    assert "train[1]" in str(err.value)


def test_wrong_image_shape_fails(good):
    df = classification_manifest({"train": _split(3, 0), "test": _split(1, 1, side=SIDE - 1)})
    report = _validate(df)
    assert _failed(report) == {
        ("expect_column_values_to_be_in_set", "height", "manifest"),
        ("expect_column_values_to_be_in_set", "width", "manifest"),
    }
    assert f"e.g. [{SIDE - 1}]" in report.failures[0].observed


def test_image_in_both_splits_fails():
    train, test = _split(3, 0), _split(1, 1)
    test[0][2] = train[0][5]
    report = _validate(classification_manifest({"train": train, "test": test}))
    assert _failed(report) == {("expect_column_values_to_be_in_set", "in_other_split", "manifest")}
    assert report.failures[0].unexpected_count == 2
    assert "train[5]" in report.failures[0].observed and "test[2]" in report.failures[0].observed


def test_class_imbalance_fails_and_reports_shares(good):
    df = good.copy()
    df.loc[(df["split"] == "train") & (df["label"] == 3), "label"] = 0  # train: 6/3/3/0
    report = _validate(df, tolerance=0.5)
    assert _failed(report) == {("expect_column_values_to_be_between", "share", "class_balance")}
    assert report.observed["class_shares"]["train"] == {
        "class0": 0.5, "class1": 0.25, "class2": 0.25, "class3": 0.0,
    }
    with pytest.raises(ValidationFailed, match=r"share\) on class_balance: 2 unexpected values.*split=train label=0"):
        raise_if_failed(report, "tiny")


def test_class_balance_table_counts_missing_classes(good):
    table = class_balance_table(good[good["label"] != 2], N_CLASSES)
    assert len(table) == 2 * N_CLASSES
    row = table[(table["split"] == "train") & (table["label"] == 2)].iloc[0]
    assert (row["count"], row["share"]) == (0, 0.0)


def test_missing_column_and_nulls_fail(good):
    df = good.drop(columns=["mean"]).assign(extra=1)
    df.loc[0, "sha256"] = None
    report = _validate(df)
    failed = _failed(report)
    assert ("expect_table_columns_to_match_set", None, "manifest") in failed
    assert ("expect_column_values_to_not_be_null", "sha256", "manifest") in failed
    columns_failure = next(f for f in report.failures if f.expectation == "expect_table_columns_to_match_set")
    assert "extra" in columns_failure.observed and "mean" in columns_failure.observed


# --------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------

CANVAS = 16


def _scenes():
    """Three hand-made scenes: rectangular masks with boxes that bound them exactly."""
    rects = [(2, 4, 10, 8), (0, 0, 5, 16), (11, 9, 16, 16)]  # (x0, y0, x1, y1), pixels
    images = np.zeros((3, CANVAS, CANVAS, 1), np.uint8)
    masks = np.zeros((3, CANVAS, CANVAS), np.uint8)
    boxes = np.zeros((3, 4), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        images[i, y0:y1, x0:x1] = 100 + i
        masks[i, y0:y1, x0:x1] = 1
        boxes[i] = np.array([x0, y0, x1 - x0, y1 - y0]) / CANVAS
    return {"images": images, "masks": masks, "boxes": boxes, "labels": np.array([0, 1, 2], np.uint8)}


def _validate_scenes(train):
    return validate_scenes(scenes_manifest({"train": train}), n_classes=N_CLASSES, canvas=CANVAS)


def test_good_scenes_pass():
    report = _validate_scenes(_scenes())
    assert report.success, [f.describe() for f in report.failures]


def _with(defect):
    scenes = _scenes()
    defect(scenes)
    return _failed(_validate_scenes(scenes))


def test_box_outside_canvas_fails():
    def shift_right(s):
        s["boxes"][2, 0] = 0.8  # x2 = 0.8 + 5/16 > 1

    def shift_up(s):
        s["boxes"][0, 1] = -0.1

    assert ("expect_column_values_to_be_between", "box_x2", "manifest") in _with(shift_right)
    assert ("expect_column_values_to_be_between", "box_y", "manifest") in _with(shift_up)


def test_degenerate_box_fails():
    def zero_width(s):
        s["boxes"][0, 2] = 0.0

    def negative_height(s):
        s["boxes"][1, 3] = -0.1

    assert ("expect_column_values_to_be_between", "box_w", "manifest") in _with(zero_width)
    assert ("expect_column_values_to_be_between", "box_h", "manifest") in _with(negative_height)


def test_box_not_bounding_mask_fails():
    def move_box(s):
        s["boxes"][0, :2] += 2 / CANVAS  # still inside the canvas, 2 px off the mask

    assert _with(move_box) == {("expect_column_values_to_be_in_set", "box_bounds_mask", "manifest")}


def test_empty_mask_fails():
    def empty(s):
        s["masks"][1] = 0

    failed = _with(empty)
    assert ("expect_column_values_to_be_between", "mask_coverage", "manifest") in failed


def test_mask_values_outside_binary_fail():
    def two(s):
        s["masks"][0][s["masks"][0] == 1] = 2

    assert _with(two) == {("expect_column_values_to_be_in_set", "mask_values_ok", "manifest")}


def test_scene_in_both_splits_fails():
    train, test = _scenes(), _scenes()
    df = scenes_manifest({"train": train, "test": test})
    report = validate_scenes(df, n_classes=N_CLASSES, canvas=CANVAS)
    assert _failed(report) == {("expect_column_values_to_be_in_set", "in_other_split", "manifest")}


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------


def test_write_report_json_and_data_docs(tmp_path, good):
    df = good.copy()
    df.loc[0, "label"] = 9
    for out in (tmp_path / "a", tmp_path / "b"):
        write_report(_validate(df, tolerance=1.0), out)
        assert (out / "data_docs" / "index.html").is_file()
        assert list((out / "data_docs" / "validations").rglob("*.html"))
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["success"] is False
    assert results["failures"][0]["column"] == "label"
    # Equal data gives equal bytes: no run times or random ids in results.json.
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


# --------------------------------------------------------------------------------------
# The stage, end to end
# --------------------------------------------------------------------------------------


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _raw_dataset(root, bad_label=False):
    raw = root / "raw" / "fashion-mnist"
    raw.mkdir(parents=True)
    for prefix, (images, labels) in (("train", _split(3, 0)), ("t10k", _split(1, 1))):
        if bad_label and prefix == "t10k":
            labels = labels.copy()
            labels[0] = 12
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    (raw / "source.json").write_text(json.dumps({"class_names": CLASS_NAMES, "image_shape": [SIDE, SIDE]}))
    return write_params(root / "params.yaml", {"paths": {"raw": str(root / "raw"), "reports": str(root / "reports")}})


def _run_stage(params):
    env = dict(os.environ, PYTHONPATH=str(ROOT), GX_ANALYTICS_ENABLED="False")
    return subprocess.run(
        [sys.executable, "-m", "stages.validate", "--params", str(params)],
        cwd=params.parent, env=env, capture_output=True, text=True, timeout=120,
    )


def test_stage_passes_on_good_data(tmp_path):
    proc = _run_stage(_raw_dataset(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "reports" / "validate"
    assert sorted(p.name for p in out.iterdir()) == ["data_docs", "manifest.csv", "results.json"]
    assert (out / "data_docs" / "index.html").is_file()
    assert json.loads((out / "results.json").read_text())["success"] is True
    assert len((out / "manifest.csv").read_text().splitlines()) == 1 + 4 * N_CLASSES


def test_stage_fails_naming_the_expectation(tmp_path):
    proc = _run_stage(_raw_dataset(tmp_path, bad_label=True))
    assert proc.returncode == 1
    assert "expect_column_values_to_be_in_set(label): 1 unexpected values, e.g. [12] at test[0]" in proc.stderr
    out = tmp_path / "reports" / "validate"  # the report is written for the user to read
    assert json.loads((out / "results.json").read_text())["success"] is False
    assert (out / "data_docs" / "index.html").is_file()
