"""save_model writes byte-deterministic .keras files: the same weights give the same bytes."""

import json
import time
import zipfile

import keras
import numpy as np

from cnnpipe.models.transfer import build_pyramid_model, classifier_features
from cnnpipe.training.outputs import load_model, save_model


def _pyramid() -> keras.Model:
    """The transfer model: one base shared by every pyramid scale (shared objects in its config)."""
    keras.utils.set_random_seed(0)
    base = classifier_features((4, 8), 2, 8)
    return build_pyramid_model(base, (32, 32, 1), 10, 0.1, (1.0, 0.5), 12)


def test_the_same_weights_saved_twice_give_the_same_bytes_and_load(tmp_path):
    first, second = _pyramid(), _pyramid()  # two builds: new Python objects, the same weights
    save_model(first, tmp_path / "a" / "m.keras")
    time.sleep(2)  # a zip entry's time has 2 s resolution
    save_model(second, tmp_path / "b" / "m.keras")
    a, b = (tmp_path / "a" / "m.keras").read_bytes(), (tmp_path / "b" / "m.keras").read_bytes()
    assert a == b
    with zipfile.ZipFile(tmp_path / "a" / "m.keras") as z:
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(z.read("metadata.json"))
        assert "shared_object_id" in z.read("config.json").decode()  # the ids the save renumbers
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.keras"]  # no temp file left
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    again = load_model(tmp_path / "b" / "m.keras", producer="transfer")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(first(x)), atol=1e-6)
