"""Bad own data (issue 15): each input runs through the real prepare stage shell (``run_stage`` in
this process, as ``python -m stages.<name>`` would) and gets one line naming the file, exit 1,
and the previous prepared set and report stay byte-identical; or it is read by a documented rule.

Rows of docs/reliability.md point here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_params, write_tiny_idx_dataset
from own_data import write_class_folders, write_csv_boxes, write_segmentation_folders
from PIL import Image

from cnnpipe.stage_shell import run_stage

REPO = Path(__file__).resolve().parents[2]


def snapshot(*dirs: Path) -> dict[str, bytes]:
    """Every file under ``dirs`` -> its bytes."""
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def run(stage: str, params: dict, tmp_path: Path, capsys) -> tuple[int, str]:
    """Run ``stages.<stage>`` through its real shell on ``params``; (exit code, stderr)."""
    import importlib

    body = importlib.import_module(f"stages.{stage}").body
    path = write_params(tmp_path / "params.yaml", params)
    capsys.readouterr()
    try:
        run_stage(stage, body, ["--params", str(path)])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def failure_line(code: int, err: str, stage: str) -> str:
    """The one line a failed stage prints; no traceback anywhere."""
    assert code == 1, err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"stage {stage} failed: "), err
    return line[len(f"stage {stage} failed: "):]


def paths(tmp_path: Path) -> dict:
    return {k: str(tmp_path / k) for k in ("raw", "prepared", "reports")}


# --------------------------------------------------------------------------------------
# Classification folders (prepare_classification)
# --------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path, capsys):
    """A class-folder set prepared once; yields (root, params, snapshot of prepared + report)."""
    root = write_class_folders(tmp_path / "data", n_per_class=4)
    params = {"paths": paths(tmp_path),
              "datasets": {"classification": {"format": "folders", "path": str(root), "image_size": 16}}}
    code, err = run("prepare_classification", params, tmp_path, capsys)
    assert code == 0, err
    out = (tmp_path / "prepared" / "classification", tmp_path / "reports" / "classification_validation")
    return root, params, out, snapshot(*out)


def manifest(tmp_path: Path, name: str = "classification") -> str:
    return (tmp_path / "reports" / f"{name}_validation" / "manifest.csv").read_text(encoding="utf-8")


def test_a_lab_tiff_in_a_class_folder_is_converted_like_any_colour_image(tmp_path, capsys, folders):
    root, params, _, _ = folders
    lab = Image.new("LAB", (20, 24), (60, 30, 200))
    lab.save(root / "train" / "hat" / "lab.tif")
    code, err = run("prepare_classification", params, tmp_path, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    row = next(r for r in manifest(tmp_path).splitlines() if "lab.tif" in r)
    assert ",LAB," in row  # read as a LAB file, converted to the set's grayscale


def test_a_file_name_that_is_not_utf8_is_read_and_named_escaped(tmp_path, capsys, folders):
    root, params, _, _ = folders
    good = next((root / "train" / "hat").glob("*.png"))
    bad = os.path.join(os.fsencode(root / "train" / "hat"), b"caf\xe9.png")
    os.rename(good, bad)
    code, err = run("prepare_classification", params, tmp_path, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert "caf\\xe9.png" in manifest(tmp_path)  # the byte, escaped: the manifest stays UTF-8


def test_one_class_is_refused_before_it_can_train_to_accuracy_1(tmp_path, capsys, folders):
    root, params, out, before = folders
    for name in ("hat", "sock"):
        for split in ("train", "test"):
            for f in (root / split / name).iterdir():
                f.unlink()
            (root / split / name).rmdir()
    line = failure_line(*run("prepare_classification", params, tmp_path, capsys), "prepare_classification")
    assert "needs at least 2 classes" in line and "boot" in line, line
    assert snapshot(*out) == before


def test_a_symlink_out_of_the_dataset_folder_is_refused_naming_it(tmp_path, capsys, folders):
    root, params, out, before = folders
    outside = tmp_path / "elsewhere.png"
    Image.new("L", (20, 20), 9).save(outside)
    link = root / "train" / "hat" / "link.png"
    link.symlink_to(outside)
    line = failure_line(*run("prepare_classification", params, tmp_path, capsys), "prepare_classification")
    assert line.startswith(f"{link}: a symbolic link to {outside}, outside the dataset folder"), line
    assert snapshot(*out) == before
    # A link inside the dataset folder is read like the file it points to.
    link.unlink()
    link.symlink_to(next((root / "train" / "hat").glob("*.png")))
    code, err = run("prepare_classification", params, tmp_path, capsys)
    assert code == 0, err


def test_a_dangling_symlink_is_named_not_skipped(tmp_path, capsys, folders):
    root, params, out, before = folders
    link = root / "train" / "sock" / "gone.png"
    link.symlink_to(tmp_path / "no-such-file.png")
    line = failure_line(*run("prepare_classification", params, tmp_path, capsys), "prepare_classification")
    assert line.startswith(f"{link}: a dangling symbolic link"), line
    assert snapshot(*out) == before


def test_an_idx_header_whose_dimensions_overflow_is_named(tmp_path, capsys):
    idx = tmp_path / "idx"
    write_tiny_idx_dataset(idx, n_train=40, n_test=20, side=8)
    params = {"paths": paths(tmp_path), "datasets": {"classification": {"format": "idx", "path": str(idx)}}}
    assert run("prepare_classification", params, tmp_path, capsys)[0] == 0
    out = (tmp_path / "prepared" / "classification", tmp_path / "reports" / "classification_validation")
    before = snapshot(*out)
    bad = idx / "train-images-idx3-ubyte"
    # 2**16 ** 4 = 2**64 images' worth of bytes: np.prod in int64 wraps to 0.
    bad.write_bytes(bytes([0, 0, 0x08, 4]) + (2**16).to_bytes(4, "big") * 4)
    line = failure_line(*run("prepare_classification", params, tmp_path, capsys), "prepare_classification")
    assert line.startswith(f"{bad}: truncated IDX data: shape (65536, 65536, 65536, 65536)"), line
    assert str(2**64 + 20) in line
    assert snapshot(*out) == before


# --------------------------------------------------------------------------------------
# Localization CSV and segmentation folders (prepare: the scenes, then the own sets)
# --------------------------------------------------------------------------------------


def prepare_params(tmp_path: Path, **datasets) -> dict:
    raw = tmp_path / "raw" / "fashion-mnist"
    data = write_tiny_idx_dataset(raw, n_train=60, n_test=20)
    (raw / "source.json").write_text(json.dumps({"class_names": [f"c{i}" for i in range(10)],
                                                 "image_shape": list(data.x_train.shape[1:])}))
    return {"paths": paths(tmp_path), "datasets": datasets,
            "prepare": {"val_fraction": 0.2, "scenes": {"n_train": 8, "n_val": 4, "n_test": 4}}}


@pytest.fixture
def csv_boxes(tmp_path, capsys):
    csv = write_csv_boxes(tmp_path / "csv", n=12)
    params = prepare_params(tmp_path, localization={"format": "csv", "path": str(csv), "image_size": 16})
    code, err = run("prepare", params, tmp_path, capsys)
    assert code == 0, err
    out = (tmp_path / "prepared" / "csv", tmp_path / "reports" / "csv_validation")
    return csv, params, out, snapshot(*out)


def test_a_latin1_csv_is_read_as_latin1_with_a_warning(tmp_path, capsys, csv_boxes):
    csv, params, _, _ = csv_boxes
    text = csv.read_text().replace(",cup,", ",tasse-à-café,")
    csv.write_bytes(text.encode("latin-1"))
    code, err = run("prepare", params, tmp_path, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert re.search(rf"{re.escape(str(csv))}: not UTF-8 .*line 2.*read as Latin-1", err), err
    meta = json.loads((tmp_path / "prepared" / "csv" / "meta.json").read_text())
    assert meta["class_names"] == ["pen", "tasse-à-café"]


def test_a_utf8_bom_csv_has_its_header_recognised(tmp_path, capsys, csv_boxes):
    csv, params, _, _ = csv_boxes
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    code, err = run("prepare", params, tmp_path, capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "prepared" / "csv" / "meta.json").read_text())
    assert sum(meta["counts"].values()) == 12 and meta["class_names"] == ["cup", "pen"]


@pytest.mark.parametrize("escape", ["../outside.png", "ABSOLUTE"], ids=["dotdot", "absolute"])
def test_a_csv_file_outside_image_root_is_refused(tmp_path, capsys, csv_boxes, escape):
    csv, params, out, before = csv_boxes
    outside = tmp_path / "outside.png"
    Image.new("L", (40, 40), 9).save(outside)
    name = str(outside) if escape == "ABSOLUTE" else "../outside.png"
    lines = csv.read_text().splitlines()
    lines[3] = ",".join([name, *lines[3].split(",")[1:]])
    csv.write_text("\n".join(lines) + "\n")
    line = failure_line(*run("prepare", params, tmp_path, capsys), "prepare")
    assert line.startswith(f"{csv}:4: {name} is outside image_root {csv.parent}"), line
    assert snapshot(*out) == before


@pytest.fixture
def seg(tmp_path, capsys):
    root = write_segmentation_folders(tmp_path / "seg", n=8)
    params = prepare_params(tmp_path, segmentation={"format": "folders", "path": str(root), "image_size": 16})
    code, err = run("prepare", params, tmp_path, capsys)
    assert code == 0, err
    out = (tmp_path / "prepared" / "folders", tmp_path / "reports" / "folders_validation")
    return root, params, out, snapshot(*out)


def test_a_jpeg_mask_is_found_and_refused_as_lossy(tmp_path, capsys, seg):
    root, params, out, before = seg
    png = root / "train" / "masks" / "item003.png"
    jpg = png.with_suffix(".jpg")
    Image.open(png).save(jpg, quality=90)
    png.unlink()
    line = failure_line(*run("prepare", params, tmp_path, capsys), "prepare")
    assert line.startswith(f"{jpg}: a JPEG mask is lossy"), line
    assert snapshot(*out) == before


def test_an_anti_aliased_mask_in_a_binary_set_is_refused_naming_its_values(tmp_path, capsys, seg):
    root, params, out, before = seg
    mask = root / "train" / "masks" / "item002.png"
    values = np.asarray(Image.open(mask)).copy()
    values[0, :3] = (64, 128, 64)
    Image.fromarray(values).save(mask)
    line = failure_line(*run("prepare", params, tmp_path, capsys), "prepare")
    assert line.startswith(f"{mask}: holds 64, 128 besides 0 and 255"), line
    assert snapshot(*out) == before


# --------------------------------------------------------------------------------------
# Great Expectations Data Docs of an own-data run
# --------------------------------------------------------------------------------------


def test_own_data_docs_name_the_suite_and_hold_its_results(tmp_path, capsys, folders):
    _, params, out, _ = folders
    code, err = run("prepare_classification", params, tmp_path, capsys)
    assert code == 0 and "Traceback" not in err and "Error" not in err, err
    docs = out[1] / "data_docs"
    pages = sorted(str(p.relative_to(docs)) for p in docs.rglob("*.html"))
    validations = [p for p in pages if p.startswith("validations/")]
    assert len(validations) == 2, pages  # the manifest and the class counts
    index = (docs / "index.html").read_text()
    assert "datasets.classification" in index and "manifest" in index, index[:2000]
    for name in validations:
        text = " ".join(re.sub(r"<[^>]+>", " ", (docs / name).read_text()).split())
        assert "Expectation Suite: datasets.classification_folders" in text, text[-2000:]
        assert "Status: Succeeded" in text and "Unsuccessful Expectations 0" in text, text[-2000:]
    manifest_page = next(n for n in validations if n.endswith("manifest.html"))
    assert "values must belong to this set" in (docs / manifest_page).read_text()


def test_a_broken_file_with_a_non_utf8_name_is_named_in_one_line(tmp_path, folders):
    """In the stage's own process: Python writes the odd byte to stderr escaped, never crashes."""
    root, params, out, before = folders
    bad = os.path.join(os.fsencode(root / "train" / "hat"), b"caf\xe9.png")
    with open(bad, "wb"):
        pass
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "stages.prepare_classification", "--params",
                           str(write_params(tmp_path / "params.yaml", params))],
                          cwd=REPO, env=env, capture_output=True, timeout=600, check=False)
    err = proc.stderr.decode("utf-8")  # strict: the stage wrote valid UTF-8
    line = failure_line(proc.returncode, err, "prepare_classification")
    assert line == f"{root}/train/hat/caf\\udce9.png: an empty (zero-byte) file", line
    assert snapshot(*out) == before
