"""The data fingerprints (``cnnpipe/data/raw/fingerprint.py``) that make DVC notice new data: they
change with the content of a source or own-data file, and not with a touch or a hidden file."""

from __future__ import annotations

import os

from helpers import params_with, write_tiny_idx_dataset
from own_data import write_segmentation_folders

from cnnpipe.data.raw.fingerprint import fingerprints


def test_own_data_fingerprint_follows_content_not_mtimes(tmp_path):
    seg = write_segmentation_folders(tmp_path / "seg", n=4)
    params = params_with({"datasets": {"segmentation": {"format": "folders", "path": str(seg)}}})
    first = fingerprints(params)
    assert set(first["segmentation"]["files"]) >= {"train/images/item000.png", "train/masks/item000.png"}
    assert first["classification"] == {"format": "fashion_mnist"}  # built in: nothing local to compare

    image = seg / "train" / "images" / "item000.png"
    os.utime(image, ns=(1, 1))  # a touch, a checkout: same bytes
    (seg / ".DS_Store").write_bytes(b"junk")
    assert fingerprints(params) == first

    image.write_bytes((seg / "train" / "images" / "item001.png").read_bytes())  # a replaced image
    second = fingerprints(params)
    assert second["segmentation"] != first["segmentation"]
    assert {k: v for k, v in second.items() if k != "segmentation"} == {
        k: v for k, v in first.items() if k != "segmentation"}


def test_source_fingerprint_is_the_files_fetch_would_read(tmp_path):
    raw = tmp_path / "idx"
    write_tiny_idx_dataset(raw, n_train=20, n_test=10)
    params = params_with({"fetch": {"dataset": "idx", "local_dir": str(raw), "system_dir": None}})
    record = fingerprints(params)["source"]
    assert record["source"] == "local_dir" and len(record["files"]) == 4
    missing = params_with({"fetch": {"local_dir": str(tmp_path / "nowhere"), "system_dir": None}})
    assert fingerprints(missing)["source"] == {"source": "url", "url": missing.fetch.url}
