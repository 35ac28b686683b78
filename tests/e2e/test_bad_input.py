"""Bad input (issue 6): every malformed data file, param or model/image gets one clear line that
names the file, key or choice at fault, the stage exits 1, and what was already written stays.

Rows of docs/reliability.md point here. Stages run for real (in this process through their own
``run_stage`` shell, or in a subprocess where the exit code itself is the point).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    params_with,
    write_params,
    write_tiny_idx_dataset,
)

from cnnpipe.config import ParamsError
from cnnpipe.data.images import load_image, open_image
from cnnpipe.data.raw.idx import write_idx
from cnnpipe.errors import DataError
from cnnpipe.io import load_array
from cnnpipe.serving.predict import model_input
from cnnpipe.stage_shell import run_stage

REPO = Path(__file__).resolve().parents[2]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def stage_in_process(name: str, body, params: dict, tmp_path: Path, capsys) -> tuple[int, str]:
    """Run a stage's real shell (``run_stage``) on ``params``; returns (exit code, stderr)."""
    path = write_params(tmp_path / "params.yaml", params)
    capsys.readouterr()
    try:
        run_stage(name, body, ["--params", str(path)])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Data: IDX files
# --------------------------------------------------------------------------------------


def _wrong_magic(d: Path) -> Path:
    path = d / TRAIN_IMAGES
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    return path


def _truncated(d: Path) -> Path:
    path = d / TEST_IMAGES
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _counts_disagree(d: Path) -> Path:
    write_idx(d / TRAIN_LABELS, np.zeros(39, np.uint8))  # 40 images
    return d / TRAIN_LABELS


def _label_out_of_range(d: Path) -> Path:
    labels = (np.arange(40) % 10).astype(np.uint8)
    labels[5] = 12  # 10 class names: 0..9
    write_idx(d / TRAIN_LABELS, labels)
    return d / TRAIN_LABELS


def _empty(d: Path) -> Path:
    write_idx(d / TRAIN_IMAGES, np.zeros((0, 28, 28), np.uint8))
    write_idx(d / TRAIN_LABELS, np.zeros(0, np.uint8))
    return d / TRAIN_IMAGES


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_wrong_magic, "wrong IDX magic number: expected 00 00 <dtype code> <ndim>, found 12 34 08 03"),
        (_truncated, "truncated IDX data: shape (20, 28, 28) of uint8 needs 15696 bytes, found 15596"),
        (_counts_disagree, "has 40 images"),
        (_label_out_of_range, "labels span 0..12, outside 0..9 for the 10 class names"),
        (_empty, "the train split is empty (0 images)"),
    ],
    ids=["wrong-magic", "truncated", "counts-disagree", "label-out-of-range", "empty-dataset"],
)
def test_bad_idx_fails_the_fetch_stage_naming_file_and_problem_and_keeps_the_old_data(
    tmp_path, capsys, damage, problem
):
    import stages.fetch

    good, bad, raw = tmp_path / "good", tmp_path / "bad", tmp_path / "raw"
    write_tiny_idx_dataset(good, n_train=40, n_test=20)
    write_tiny_idx_dataset(bad, n_train=40, n_test=20, seed=1)
    params = {"paths": {"raw": str(raw)},
              "fetch": {"dataset": "idx", "local_dir": str(good), "system_dir": None, "url": None}}
    assert stage_in_process("fetch", stages.fetch.body, params, tmp_path, capsys)[0] == 0
    before = snapshot(raw)

    culprit = damage(bad)
    params["fetch"]["local_dir"] = str(bad)
    code, err = stage_in_process("fetch", stages.fetch.body, params, tmp_path, capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("stage fetch failed: ")]
    assert len(lines) == 1, err
    assert str(culprit) in lines[0] and problem in lines[0]
    assert "Traceback" not in err
    assert snapshot(raw) == before  # the previous raw data, byte for byte, and no temp leftovers


def test_an_empty_class_fails_validation_naming_the_class(tmp_path, capsys):
    import stages.fetch
    import stages.validate

    data = write_tiny_idx_dataset(tmp_path / "idx", n_train=40, n_test=20)
    labels = data.y_train.copy()
    labels[labels == 3] = 4  # class 3 has no training images
    write_idx(tmp_path / "idx" / TRAIN_LABELS, labels)
    params = {"paths": {"raw": str(tmp_path / "raw"), "reports": str(tmp_path / "reports")},
              "fetch": {"dataset": "idx", "local_dir": str(tmp_path / "idx"), "system_dir": None, "url": None}}
    assert stage_in_process("fetch", stages.fetch.body, params, tmp_path, capsys)[0] == 0
    code, err = stage_in_process("validate", stages.validate.body, params, tmp_path, capsys)
    assert code == 1
    assert "stage validate failed: " in err and "class_balance" in err and "split=train label=3" in err
    assert (tmp_path / "reports" / "validate" / "results.json").is_file()  # the report explains it


def test_a_pickled_array_is_refused_without_running_its_code(tmp_path, capsys):
    """A prepared array holding a pickle whose loading would run code: a DataError naming the
    file, and the code never runs (allow_pickle=False)."""
    import stages.train_classifier

    marker = tmp_path / "pwned"
    prepared = tmp_path / "prepared" / "classification"
    prepared.mkdir(parents=True)
    payload = np.empty(1, dtype=object)
    payload[0] = _Touch(marker)
    np.save(prepared / "train_images.npy", payload, allow_pickle=True)
    np.save(prepared / "train_labels.npy", np.zeros(1, np.uint8))
    (prepared / "meta.json").write_text('{"class_names": ["a", "b"]}')
    params = {"paths": {"prepared": str(tmp_path / "prepared"), "models": str(tmp_path / "models"),
                        "plots": str(tmp_path / "plots"), "metrics": str(tmp_path / "metrics")}}

    code, err = stage_in_process("train_classifier", stages.train_classifier.main, params, tmp_path, capsys)
    assert code == 1
    assert f"{prepared / 'train_images.npy'}: holds pickled Python objects" in err
    assert not marker.exists() and not (tmp_path / "models").exists()
    np.load(prepared / "train_images.npy", allow_pickle=True)  # the payload is real: loading it runs it
    assert marker.exists()


class _Touch:
    """Unpickling this creates ``path``: stands in for any code a data file could carry."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (pickle.dumps([1, 2, 3]), "not a .npy file (no NUMPY magic)"),
        (b"", "not a readable .npy array: No data left in file"),
        (b"\x93NUMPY\x01\x00garbage", "not a readable .npy array"),
    ],
    ids=["plain-pickle", "zero-bytes", "bad-header"],
)
def test_load_array_names_the_file_for_anything_but_a_numeric_npy(tmp_path, content, problem):
    path = tmp_path / "x_test.npy"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_array(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


# --------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train_classifier": {"fit": {"epochz": 3}}},
         "unknown key(s) train_classifier.fit.epochz; valid keys of train_classifier.fit: epochs, batch_size"),
        ({"train_localizer": {"fit": {"epochs": "ten"}}}, "train_localizer.fit.epochs: expected an integer, got str 'ten'"),
        ({"train_unet": {"filters": 16}}, "train_unet.filters: expected a list, got int 16"),
        ({"train_classifier": {"fit": {"epochs": 0}}}, "train_classifier.fit.epochs: must be > 0, got 0"),
        ({"transfer": {"fit": {"learning_rate": -0.1}}}, "transfer.fit.learning_rate: must be > 0, got -0.1"),
        ({"prepare": {"scenes": {"max_side": 100}}},
         "prepare.scenes.max_side: an item of 100 px does not fit the 64 px canvas"),
        ({"transfer": {"backbone": "resnet50"}},
         "transfer.backbone: unsupported value 'resnet50'; choose one of: classifier, mobilenet_v2, none"),
        ({"train_localizer": {"backbone": "vgg"}},
         "train_localizer.backbone: unsupported value 'vgg'; choose one of: classifier, none"),
        ({"fetch": {"dataset": "cifar10"}}, "fetch.dataset: unsupported value 'cifar10'; choose one of: fashion-mnist, idx"),
        ({"train_classifier": {"fit": {"precision": "fp16"}}},
         "train_classifier.fit.precision: unsupported value 'fp16'; choose one of: auto, float32, mixed_bfloat16"),
    ],
    ids=["unknown-key", "wrong-type", "wrong-shape", "epochs-0", "lr-negative", "item-over-canvas",
         "unknown-backbone", "unknown-localizer-backbone", "unknown-dataset", "unknown-precision"],
)
def test_bad_params_name_the_key_and_the_valid_choices(data, message):
    with pytest.raises(ParamsError) as err:
        params_with(data)
    assert message in str(err.value)


def test_a_label_budget_larger_than_the_data_names_the_param():
    from cnnpipe.data.prepared import Split
    from cnnpipe.training.transfer import few_label_subset

    labels = np.repeat(np.arange(3), 4)  # 4 examples per class
    split = Split(images=np.zeros((12, 8, 8, 1), np.float32), labels=labels)
    with pytest.raises(ParamsError) as err:
        few_label_subset(split, 5, 3, seed=0, what="scenes train")
    assert "has 4 examples of class 0, fewer than the label budget of 5" in str(err.value)
    assert "transfer.labels_per_class" in str(err.value)


def test_a_bad_params_file_stops_the_stage_process_with_one_line(tmp_path):
    write_params(tmp_path / "params.yaml", {"fetch": {"dataset": "idx", "retries": -1}})
    proc = subprocess.run([sys.executable, "-m", "stages.fetch", "--params", str(tmp_path / "params.yaml")],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "stage fetch failed: fetch.retries: must be >= 0, got -1"
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


# --------------------------------------------------------------------------------------
# Images given to predict
# --------------------------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.write_bytes(b""), "an empty (zero-byte) file"),
        (lambda p: p.write_text("a,b,c\n1,2,3\n"), "not a readable image (UnidentifiedImageError: "),
        (lambda p: _valid_png(p, truncate=True), "not a readable image ("),
        (lambda p: _png_header_only(p, 30000, 30000), "refusing to decode an image this large"),
        (lambda p: p.mkdir(), "is a directory; give image files"),
    ],
    ids=["zero-bytes", "not-an-image", "truncated-png", "decompression-bomb", "directory"],
)
def test_unreadable_images_name_the_file(tmp_path, make, problem):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(DataError) as err:
        open_image(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


def _valid_png(path: Path, truncate: bool = False) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    if truncate:
        path.write_bytes(path.read_bytes()[:200])


def _gray_ramp() -> np.ndarray:
    return np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # 16 x 16, 0..240


@pytest.mark.parametrize(
    ("mode", "make"),
    [
        ("L", lambda g: g),
        ("RGB", lambda g: np.repeat(g[..., None], 3, axis=-1)),
        ("RGBA", lambda g: np.dstack([np.repeat(g[..., None], 3, axis=-1), np.full_like(g, 255)])),
        ("LA", lambda g: np.dstack([g, np.full_like(g, 255)])),
        ("I;16", lambda g: g.astype(np.uint16) * 257),  # 16-bit: scaled, not clipped to white
        ("F", lambda g: g.astype(np.float32) / 255.0),  # float in [0, 1]
    ],
)
def test_every_image_mode_becomes_the_same_grayscale(tmp_path, mode, make):
    from PIL import Image

    gray = _gray_ramp()
    path = tmp_path / f"ramp-{mode.replace(';', '')}.{'tiff' if mode == 'F' else 'png'}"
    Image.fromarray(make(gray)).save(path)
    pixels = load_image(path, 16, 1).pixels
    assert pixels.shape == (16, 16) and np.abs(pixels.astype(int) - gray).max() <= 1
    rgb = load_image(path, 16, 3).pixels  # an RGB model gets the same gray in each channel
    assert rgb.shape == (16, 16, 3) and np.abs(rgb.astype(int) - gray[..., None]).max() <= 1


def test_transparent_pixels_become_the_black_background(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere ...
    rgba[2:6, 2:6, 3] = 255  # ... but only the centre is opaque
    Image.fromarray(rgba).save(tmp_path / "item.png")
    pixels = load_image(tmp_path / "item.png", 8, 1).pixels
    assert pixels[3, 3] == 255 and pixels[0, 0] == 0


@pytest.mark.parametrize("size", [(1, 1), (3, 500), (1000, 700)])
def test_any_image_size_becomes_the_model_input_shape(tmp_path, size):
    from PIL import Image

    Image.new("RGB", size, (200, 10, 10)).save(tmp_path / "odd.jpg")
    path = tmp_path / "odd.jpg"
    x = model_input(open_image(path), (28, 28, 1), path)
    assert x.shape == (1, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert model_input(open_image(path), (96, 96, 3), path).shape == (1, 96, 96, 3)


# --------------------------------------------------------------------------------------
# Data: users' own image files and archives (the readers of cnnpipe/data/images.py, archive.py)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(b""), "an empty (zero-byte) file"),
        (lambda p: p.write_text("name,size\nboot,3\n"), "not a readable image"),
        (lambda p: p.write_bytes(p.read_bytes()[:60]), "not a readable image"),
    ],
    ids=["zero-byte", "not-an-image", "corrupt"],
)
def test_a_broken_image_fails_the_prepare_stage_and_keeps_the_previous_set(tmp_path, capsys, damage, problem):
    from own_data import write_class_folders

    import stages.prepare_classification

    root = write_class_folders(tmp_path / "folders", n_per_class=4)
    params = {"paths": {"prepared": str(tmp_path / "prepared"), "reports": str(tmp_path / "reports")},
              "datasets": {"classification": {"format": "folders", "path": str(root), "image_size": 16}}}
    body = stages.prepare_classification.body
    assert stage_in_process("prepare_classification", body, params, tmp_path, capsys)[0] == 0
    before = snapshot(tmp_path / "prepared")

    bad = next((root / "train" / "hat").glob("*.jpg"), None) or next((root / "train" / "hat").iterdir())
    damage(bad)
    code, err = stage_in_process("prepare_classification", body, params, tmp_path, capsys)
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"stage prepare_classification failed: {bad}: {problem}"), err
    assert snapshot(tmp_path / "prepared") == before


def test_an_archive_with_a_hard_link_is_refused(tmp_path):
    import io
    import tarfile

    from cnnpipe.data.raw.archive import safe_extract

    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("oxford/images/a.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("oxford/images/b.jpg")
        link.type, link.linkname = tarfile.LNKTYPE, "/etc/shadow"
        tar.addfile(link)
    with pytest.raises(DataError, match=r"refusing member 'oxford/images/b.jpg': a link \(to '/etc/shadow'\)"):
        safe_extract(archive, tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*"))  # checked before anything is written
