"""Own datasets: each format read from tiny real files, the suite's verdicts, and every bad
input failing with a message that names the file and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import params_with, section, write_tiny_idx_dataset
from own_data import (
    evil_tar,
    tar_directory,
    write_class_folders,
    write_csv_boxes,
    write_oxford_pet,
    write_segmentation_folders,
)
from PIL import Image

from cnnpipe.config import ParamsError
from cnnpipe.data.formats.readers import READERS, read_task_data
from cnnpipe.data.images import load_image
from cnnpipe.data.raw.archive import safe_extract
from cnnpipe.data.validation.own import own_manifest, validate_own
from cnnpipe.errors import DataError
from cnnpipe.taskspec import DATASET_FORMATS

FETCH = section("fetch", timeout_s=5.0, retries=0)


def read(task: str, fmt: str, **kw):
    return read_task_data(task, section(f"datasets.{task}", format=fmt, **kw), 7, FETCH)


def verdict(data):
    report = validate_own(own_manifest(data), data, "test")
    return report.success, " | ".join(f.describe() for f in report.failures)


def test_every_own_format_has_exactly_one_reader():
    own = {(dataset, fmt) for dataset, formats in DATASET_FORMATS.items() for fmt in formats[1:]}
    assert set(READERS) == own


# --------------------------------------------------------------------------------------
# params
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("datasets, message", [
    ({"classification": {"format": "png"}}, "choose one of: fashion_mnist, idx, folders"),
    ({"localization": {"format": "folders", "path": "x"}}, "choose one of: scenes, oxford_pet, csv"),
    ({"classification": {"format": "folders"}}, "datasets.classification.path: format 'folders' needs a path"),
    ({"localization": {"format": "oxford_pet"}}, "exactly one of path"),
    ({"segmentation": {"format": "scenes", "path": "/x"}}, "built in"),
    ({"classification": {"format": "idx", "path": "/x", "channels": 2}}, "channels"),
    ({"localization": {"format": "csv", "path": "/x", "colour": 1}}, "unknown key(s) datasets.localization.colour"),
    ({"localization": {"format": "oxford_pet", "url": "http://a/x.tgz"},
      "segmentation": {"format": "oxford_pet", "path": "/b"}}, "same source"),
])
def test_bad_dataset_params_name_the_key(datasets, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        params_with({"datasets": datasets})


# --------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------


def test_class_folders_with_splits_mixed_modes_and_sizes(tmp_path):
    data = read("classification", "folders", path=str(write_class_folders(tmp_path / "d")), image_size=32)
    assert data.class_names == ["boot", "hat", "sock"]
    train = data.splits["train"].arrays(32, 1)
    assert train["images"].shape == (24, 32, 32, 1) and sorted(set(train["labels"].tolist())) == [0, 1, 2]
    assert len(data.splits["test"].labels) == 12
    modes = {r["mode"] for r in data.splits["train"].rows}
    assert {"L", "RGB", "RGBA", "P"} <= modes  # converted, not crashed
    assert verdict(data) == (True, "")


def test_class_folders_without_splits_get_a_seeded_stratified_split(tmp_path):
    root = write_class_folders(tmp_path / "d", splits=False, n_per_class=10)
    a = read("classification", "folders", path=str(root), channels=3, test_fraction=0.2)
    b = read("classification", "folders", path=str(root), channels=3, test_fraction=0.2)
    assert [r["file"] for r in a.splits["test"].rows] == [r["file"] for r in b.splits["test"].rows]
    assert np.bincount(a.splits["test"].labels).tolist() == [2, 2, 2]
    assert a.splits["train"].arrays(64, 3)["images"].shape == (24, 64, 64, 3)


@pytest.mark.parametrize("damage, message", [
    ("zero", "an empty (zero-byte) file"),
    ("text", "not a readable image"),
    ("truncated", "not a readable image"),
])
def test_a_broken_image_file_is_named(tmp_path, damage, message):
    root = write_class_folders(tmp_path / "d")
    bad = root / "train" / "hat" / "hat_0.png"
    if damage == "zero":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_text("this is not a picture\n")
    else:
        bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=re.escape(f"{bad}: {message}")):
        read("classification", "folders", path=str(root))


def test_empty_class_folder_and_unknown_test_class_fail(tmp_path):
    root = write_class_folders(tmp_path / "d")
    (root / "train" / "scarf").mkdir()
    with pytest.raises(DataError, match=r"train/scarf: class folder holds no images"):
        read("classification", "folders", path=str(root))
    (root / "train" / "scarf").rmdir()
    (root / "test" / "glove").mkdir()
    with pytest.raises(DataError, match="glove have no counterpart"):
        read("classification", "folders", path=str(root))
    with pytest.raises(DataError, match="not found"):
        read("classification", "folders", path=str(tmp_path / "missing"))


def test_leak_between_splits_fails_the_suite(tmp_path):
    root = write_class_folders(tmp_path / "d")
    src = root / "train" / "hat" / "hat_2.png"
    (root / "test" / "hat" / "copy.png").write_bytes(src.read_bytes())
    ok, failures = verdict(read("classification", "folders", path=str(root)))
    assert not ok and "in_other_split" in failures


def test_idx_of_any_size_and_named_classes(tmp_path):
    write_tiny_idx_dataset(tmp_path / "idx", n_train=40, n_test=20, side=20, gz=True)
    data = read("classification", "idx", path=str(tmp_path / "idx"), class_names=[f"k{i}" for i in range(10)])
    assert data.side == 20 and data.class_names[0] == "k0"
    assert data.splits["train"].arrays(20, 1)["images"].shape == (40, 20, 20, 1)
    assert verdict(data)[0]
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
        read("classification", "idx", path=str(tmp_path / "idx"))


# --------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------


def test_binary_masks_0_255_become_0_1(tmp_path):
    data = read("segmentation", "folders", path=str(write_segmentation_folders(tmp_path / "s")), image_size=32)
    assert data.mask_kind == "binary" and data.class_names == ["foreground"]
    masks = data.splits["train"].arrays(32, 1)["masks"]
    assert masks.shape == (16, 32, 32) and set(np.unique(masks).tolist()) == {0, 1}
    assert verdict(data) == (True, "")


def test_index_masks_keep_their_classes_through_nearest_resizing(tmp_path):
    root = write_segmentation_folders(tmp_path / "s", n_classes=3)
    data = read("segmentation", "folders", path=str(root), image_size=48, class_names=["a", "b", "c"])
    assert data.mask_kind == "index" and data.class_names == ["a", "b", "c"]
    masks = data.splits["train"].arrays(48, 1)["masks"]
    assert set(np.unique(masks).tolist()) == {0, 1, 2, 3}  # nearest neighbour: no blended values
    assert verdict(data)[0]


def test_mask_of_the_wrong_size_or_values_fails_the_suite(tmp_path):
    root = write_segmentation_folders(tmp_path / "s", n_classes=2)
    mask = root / "train" / "masks" / "item001.png"
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask)
    data = read("segmentation", "folders", path=str(root), class_names=["a", "b"])
    ok, failures = verdict(data)
    assert not ok and "mask_matches_image" in failures and "train[1]" in failures
    bad = np.asarray(Image.open(root / "train" / "masks" / "item002.png")).copy()
    bad[0, 0] = 9
    Image.fromarray(bad).save(root / "train" / "masks" / "item002.png")
    ok, failures = verdict(read("segmentation", "folders", path=str(root), class_names=["a", "b"]))
    assert "mask_values_ok" in failures


def test_image_without_mask_is_named(tmp_path):
    root = write_segmentation_folders(tmp_path / "s")
    (root / "test" / "masks" / "item002.png").unlink()
    with pytest.raises(DataError, match=r"test/images/item002.png: no mask with the same stem"):
        read("segmentation", "folders", path=str(root))


# --------------------------------------------------------------------------------------
# Oxford-IIIT Pet and archives
# --------------------------------------------------------------------------------------


def test_oxford_pet_directory_species_and_breeds(tmp_path):
    root = write_oxford_pet(tmp_path / "pets")
    data = read("localization", "oxford_pet", path=str(root), image_size=32)
    assert data.class_names == ["cat", "dog"] and data.source["layout"] == "annotations/test.txt"
    assert len(data.splits["test"].labels) == 4
    arrays = data.splits["train"].arrays(32, 1)
    boxes = arrays["boxes"]
    assert boxes.shape == (16, 4) and (boxes > 0).all() and (boxes[:, 0] + boxes[:, 2] <= 1).all()
    assert set(np.unique(arrays["masks"]).tolist()) == {0, 1}
    assert verdict(data) == (True, "")
    breeds = read("segmentation", "oxford_pet", path=str(root), classes="breed")
    assert breeds.class_names == ["Abyssinian", "Bengal", "beagle", "pug"]


def test_oxford_pet_box_outside_its_image_fails_the_suite(tmp_path):
    root = write_oxford_pet(tmp_path / "pets")
    xml = root / "annotations" / "xmls" / "pug_2.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9").replace("</xmax>", "0</xmax>"))
    ok, failures = verdict(read("localization", "oxford_pet", path=str(root)))
    assert not ok and "box_inside" in failures


def test_oxford_pet_tarball_by_url(tmp_path, http_dir):
    www, base = http_dir
    tar_directory(write_oxford_pet(tmp_path / "pets"), www / "pets.tar.gz")
    data = read("localization", "oxford_pet", url=f"{base}/pets.tar.gz")
    assert data.class_names == ["cat", "dog"] and len(data.splits["train"].labels) == 16
    with pytest.raises(DataError, match="cannot download.*404"):
        read("localization", "oxford_pet", url=f"{base}/missing.tar.gz")


@pytest.mark.parametrize("kind, message", [
    ("dotdot", "'..' escapes"), ("absolute", "absolute path"), ("symlink", "a link"),
])
def test_unsafe_archives_are_refused(tmp_path, kind, message):
    archive = evil_tar(tmp_path / "evil.tar.gz", kind)
    with pytest.raises(DataError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/cnnpipe-absolute.txt").exists()
    assert not any((tmp_path / "out").rglob("*"))


def test_not_an_archive_is_named(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_text("hello")
    with pytest.raises(DataError, match=re.escape(f"{bad}: not a readable tar archive")):
        safe_extract(bad, tmp_path / "out")


# --------------------------------------------------------------------------------------
# CSV boxes
# --------------------------------------------------------------------------------------


def test_csv_boxes(tmp_path):
    data = read("localization", "csv", path=str(write_csv_boxes(tmp_path / "c")), image_size=32)
    assert data.class_names == ["cup", "pen"]
    arrays = data.splits["train"].arrays(32, 1)
    assert arrays["boxes"].shape == (len(arrays["labels"]), 4) and "masks" not in arrays
    assert verdict(data) == (True, "")


@pytest.mark.parametrize("row, message", [
    ("img/p00.png,cup,1,2,three,4", r"boxes.csv:\d+: x, y, w, h must be numbers"),
    ("img/p00.png,cup,1,2", r"boxes.csv:\d+: expected 6 columns"),
    ("img/p01.png,cup,0,0,3,3", "already has a box on line"),
    ("img/nope.png,cup,0,0,3,3", "nope.png: no such file"),
])
def test_bad_csv_rows_are_named(tmp_path, row, message):
    csv = write_csv_boxes(tmp_path / "c")
    csv.write_text(csv.read_text() + row + "\n")
    with pytest.raises(DataError, match=message):
        read("localization", "csv", path=str(csv))


@pytest.mark.parametrize("box, column", [("0,0,0,5", "box_w"), ("20,0,30,5", "box_inside")])
def test_degenerate_or_outside_csv_box_fails_the_suite(tmp_path, box, column):
    csv = write_csv_boxes(tmp_path / "c")
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 4)[0] + "," + box
    csv.write_text("\n".join(lines) + "\n")
    ok, failures = verdict(read("localization", "csv", path=str(csv)))
    assert not ok and column in failures


def test_rgba_and_16_bit_images_convert(tmp_path):
    Image.fromarray((np.arange(400, dtype=np.uint16).reshape(20, 20) * 100)).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 16, 1)
    # A fixed 16-bit full scale, not the image's peak: 39900 / 257 -> 155 at most.
    assert out.pixels.shape == (16, 16) and 140 < out.pixels.max() <= 155
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", 8, 3)
    assert out.pixels.shape == (8, 8, 3) and out.mode == "RGBA" and 120 <= out.pixels[0, 0, 0] <= 135
