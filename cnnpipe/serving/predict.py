"""``cnnpipe predict``: image files through a registered model, on the fastest backend that
matches Keras.

Inputs are decoded by :mod:`cnnpipe.data.images`, the decoder prepare uses, with the channels
the model was trained on (``model.input_shape[-1]``: an RGB-trained model is served RGB), and
scaled by :func:`cnnpipe.data.images.to_model_input`, the scaling of training and evaluation.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnpipe.data.images import Loaded, open_image, to_model_input, to_pixels
from cnnpipe.data.masks import decide_mask
from cnnpipe.errors import ModelError, OutputError
from cnnpipe.io import atomic_file
from cnnpipe.serving import backends
from cnnpipe.serving.export import KerasPredictor, Predictor

log = logging.getLogger("cnnpipe")


@dataclass(frozen=True)
class Prediction:
    path: Path
    label: str | None = None
    probability: float | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the input image's pixels
    mask_path: Path | None = None
    coverage: float | None = None  # foreground share of the mask

    def __str__(self) -> str:
        if self.mask_path is not None:
            return f"{self.path}: mask -> {self.mask_path} (foreground {self.coverage:.1%})"
        text = f"{self.path}: {self.label} (p={self.probability:.3f})"
        if self.box is not None:
            text += " box x={} y={} w={} h={} px".format(*self.box)
        return text


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def model_pixels(image: Image.Image, shape: Sequence[int | None], path: Path) -> Loaded:
    """An opened image as the uint8 pixels a model of input ``shape`` ``(H, W, C)`` reads:
    exactly what prepare stores for the same file at that side and channel count."""
    height, width, channels = shape
    if height is None or height != width:
        raise ModelError(f"predict feeds square images; this model's input is {height}x{width}x{channels}")
    return to_pixels(image, int(height), int(channels), path)


def model_input(image: Image.Image, shape: Sequence[int | None], path: Path) -> np.ndarray:
    """One model input ``(1, H, W, C)`` float32 in [0, 1] (see :func:`model_pixels`)."""
    pixels = model_pixels(image, shape, path).pixels
    return to_model_input(pixels.reshape(1, *pixels.shape[:2], -1))


# --------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------


def mask_path(path: Path) -> Path:
    """Where the mask of the input ``path`` is written: beside it, its full name + ``.mask.png``
    (``photo.png`` -> ``photo.png.mask.png``), so ``photo.png`` and ``photo.jpg`` never share one."""
    return path.with_name(f"{path.name}.mask.png")


def check_mask_targets(paths: Sequence[Path], force: bool) -> None:
    """Refuse, before anything is written, a mask that would overwrite a file (unless ``force``)
    or that two inputs would both write."""
    seen: dict[Path, Path] = {}
    for path in paths:
        target = mask_path(path)
        key = target.resolve()
        if key in seen:
            raise OutputError(f"{path} and {seen[key]} would both write the mask {target}; predict them separately")
        seen[key] = path
        if not force and (target.exists() or target.is_symlink()):
            raise OutputError(f"{target}: already exists (the mask of {path}); nothing written; "
                              "pass --force to overwrite it")


def predict_image(
    model: Any, kind: str, class_names: Sequence[str], path: Path, image: Image.Image, *, force: bool = False
) -> Prediction:
    """Run ``model`` (a Keras model or a :mod:`cnnpipe.serving.export` predictor) on ``image``
    opened from ``path``: a class, a class + box (in the image's pixels), or a mask written
    atomically beside the input (:func:`mask_path`); an existing file there is overwritten only
    with ``force``."""
    if not hasattr(model, "backend"):  # a Keras model rather than a predictor
        model = KerasPredictor(model)
    width, height = image.size
    out = model(model_input(image, model.input_shape[1:], path))

    def top(probs: np.ndarray) -> tuple[str, float]:
        k = int(np.argmax(probs))
        return (class_names[k] if k < len(class_names) else str(k)), float(probs[k])

    if kind == "mask":
        prob = np.asarray(out)[0]
        labels = decide_mask(prob)
        scale = 255 if prob.shape[-1] == 1 else 1  # binary: visible black/white; multiclass: label ids
        mask = Image.fromarray((labels * scale).astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
        target = mask_path(path)
        check_mask_targets([path], force)
        with atomic_file(target, "wb") as f:
            mask.save(f, format="PNG")
        return Prediction(path, mask_path=target, coverage=float(np.mean(labels != 0)))
    if kind == "box":
        label, p = top(np.asarray(out["class"])[0])
        bx, by, bw, bh = np.asarray(out["box"], dtype=np.float64)[0]  # fractions of the side
        box = (round(bx * width), round(by * height), round(bw * width), round(bh * height))
        return Prediction(path, label, p, box=box)
    label, p = top(np.asarray(out)[0])
    return Prediction(path, label, p)


def load_registered_model(version: Any) -> Any:
    """The Keras model of a registered version, loaded like any stage loads one: safe mode (no
    Lambda bytecode), never a TensorFlow SavedModel a tampered MLmodel file could point at."""
    import mlflow.artifacts
    from mlflow.models import Model

    from cnnpipe.training.outputs import load_model

    uri = f"models:/{version.name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="cnnpipe-predict-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        try:
            flavor = Model.load(str(local / "MLmodel")).flavors.get("keras")
        except Exception as err:  # noqa: BLE001 - any unreadable MLmodel file
            raise ModelError(f"{uri}: no readable MLmodel file ({type(err).__name__}: {err})") from None
        if not flavor or flavor.get("save_exported_model"):
            raise ModelError(f"{uri}: not a .keras model (flavor {flavor!r}); predict loads only those, in safe mode")
        path = local / flavor.get("data", "data")
        path = (path / "model.keras") if path.is_dir() else path.with_name(path.name + ".keras")
        try:
            return load_model(path, producer="register")
        except ModelError as err:
            raise ModelError(f"{uri}: {err}") from None


def choose_backend(model: Any, inputs: list[np.ndarray], backend: str) -> Predictor:
    """The fastest backend allowed by ``backend`` (auto, tflite, keras) whose outputs match
    Keras on these inputs plus a few seeded random ones (parity); Keras when none does."""
    if backend == "keras":
        return KerasPredictor(model)
    noise = np.random.default_rng(0).random((8, *inputs[0].shape[1:]), dtype=np.float32)
    probe = np.concatenate([*inputs, noise])
    allowed = backends.BACKENDS if backend == "auto" else (backend,)
    predictor, checks = backends.choose_predictor(model, probe, allowed, cache=backends.cache_dir())
    for check in checks:
        outcome = "passed" if check.passed else "FAILED"
        log.info("parity %s: %s (max |diff| %.2g on %d inputs)", check.backend, outcome, check.max_abs_diff, check.n)
    log.info("predicting with %s", predictor.backend)
    return predictor


def predict_files(
    client: Any, ref: str, files: Sequence[str], backend: str = "auto", force: bool = False
) -> Iterator[Prediction]:
    """Predict each of ``files`` with the registered version ``ref`` (NAME, NAME@ALIAS,
    NAME/VERSION) through ``backend``; yields one :class:`Prediction` per file, in order.
    A mask model's outputs are checked before anything is written (:func:`check_mask_targets`)."""
    from cnnpipe.registry.versions import resolve

    version = resolve(client, ref)
    images = {Path(p): open_image(Path(p)) for p in files}  # bad files fail before the download
    kind = version.tags.get("cnnpipe.kind", "class")
    if kind == "mask":
        check_mask_targets(list(images), force)
    model = load_registered_model(version)
    names = json.loads(version.tags.get("cnnpipe.class_names", "[]"))
    shape = model.input_shape[1:]
    predictor = choose_backend(model, [model_input(image, shape, path) for path, image in images.items()], backend)
    for path, image in images.items():
        yield predict_image(predictor, kind, names, path, image, force=force)
