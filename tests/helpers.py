"""Helpers shared by the tests: tiny, deterministic, class-distinct datasets, and params.yaml
with a few keys changed (the schema has no defaults: every value comes from params.yaml)."""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from cnnpipe.config import (
    EXTENDS,
    Params,
    load_params,
    merge,
    params_from_dict,
    read_params,
)
from cnnpipe.data.raw.idx import encode_idx, write_idx
from cnnpipe.io import sha256_bytes

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

N_CLASSES = 10
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


class TinyDataset(NamedTuple):
    x_train: np.ndarray  # (n_train, side, side) uint8
    y_train: np.ndarray  # (n_train,) uint8 in 0..9
    x_test: np.ndarray
    y_test: np.ndarray

    def files(self) -> dict[str, np.ndarray]:
        """Canonical Fashion-MNIST file name -> array."""
        return {
            TRAIN_IMAGES: self.x_train, TRAIN_LABELS: self.y_train,
            TEST_IMAGES: self.x_test, TEST_LABELS: self.y_test,
        }

    def expected(self) -> dict[str, tuple[str, int]]:
        """Name -> (sha256, bytes) of the decompressed files: pass as ``fetch_dataset(expected=)``."""
        out = {}
        for name, array in self.files().items():
            data = encode_idx(array)
            out[name] = (sha256_bytes(data), len(data))
        return out


def _templates(side: int, rng: np.random.Generator) -> np.ndarray:
    """One binary silhouette per class: a coarse random blob upsampled to ``side``, centred,
    with a dark border like Fashion-MNIST items, so a tiny CNN can tell the classes apart."""
    grid = 6
    inner = side - 2 * max(1, side // 7)
    out = np.zeros((N_CLASSES, side, side), dtype=bool)
    seen: list[np.ndarray] = []
    for k in range(N_CLASSES):
        while True:  # redraw the (unlikely) duplicate: classes must differ
            coarse = rng.random((grid, grid)) < 0.5
            coarse[grid // 2 - 1 : grid // 2 + 1, grid // 2 - 1 : grid // 2 + 1] = True  # never empty
            if not any((coarse == s).all() for s in seen):
                break
        seen.append(coarse)
        idx = np.arange(inner) * grid // inner
        start = (side - inner) // 2
        out[k, start : start + inner, start : start + inner] = coarse[np.ix_(idx, idx)]
    return out


def _split(n: int, templates: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = (np.arange(n) % N_CLASSES).astype(np.uint8)  # balanced: every class n//10 or n//10+1
    rng.shuffle(labels)
    side = templates.shape[1]
    brightness = rng.integers(150, 256, size=(n, 1, 1))
    texture = rng.integers(-40, 1, size=(n, side, side))
    images = np.where(templates[labels], np.clip(brightness + texture, 0, 255), 0).astype(np.uint8)
    return images, labels


def write_tiny_idx_dataset(
    dir: str | Path, n_train: int, n_test: int, side: int = 28, gz: bool = False, seed: int = 0
) -> TinyDataset:
    """Write the four Fashion-MNIST-named IDX files (``.gz`` if ``gz``) into ``dir``; return the arrays.

    Images are uint8 bright class-specific silhouettes on a black background; labels are
    balanced over 0..9. Deterministic from ``seed``.
    """
    rng = np.random.default_rng(seed)
    templates = _templates(side, rng)
    x_train, y_train = _split(n_train, templates, rng)
    x_test, y_test = _split(n_test, templates, rng)
    data = TinyDataset(x_train, y_train, x_test, y_test)
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    for name, array in data.files().items():
        write_idx(dir / (f"{name}.gz" if gz else name), array, gz=gz)
    return data


def params_with(overrides: dict[str, Any] | None = None) -> Params:
    """params.yaml with ``overrides`` deep-merged in (as an overlay would be), validated."""
    return params_from_dict(merge(read_params(REPO_PARAMS), overrides or {}))


def section(dotted: str, **overrides: Any) -> Any:
    """One section of params.yaml with ``overrides``, validated as that section alone, e.g.
    ``section("train_classifier.fit", epochs=1)`` or ``section("datasets.localization", format="csv")``."""
    keys = dotted.split(".")
    data = functools.reduce(operator.getitem, keys, read_params(REPO_PARAMS))
    cls = type(functools.reduce(getattr, keys, load_params(REPO_PARAMS)))
    return cls.model_validate(merge(data, overrides))


def write_params(path: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write an overlay of this repo's params.yaml holding ``overrides``; returns ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump({EXTENDS: str(REPO_PARAMS), **(overrides or {})}, sort_keys=False))
    return path
