"""``cnnpipe predict``: image files through a registered model, on the fastest backend that
matches Keras.

The registered model is a :class:`cnnpipe.serving.pyfunc.ImageModel` (what ``mlflow.pyfunc``
loads and ``mlflow models serve`` serves); predict loads the same class from the same artifacts
(the ``.keras`` file in safe mode, its class names) and uses its decoding, normalization and
answers, so predicting and serving cannot drift from training. Only the forward pass may run
on another backend (TFLite), and only when its outputs match Keras (parity).
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

from cnnpipe.data.images import open_image
from cnnpipe.errors import ModelError, OutputError
from cnnpipe.io import atomic_file
from cnnpipe.serving import backends
from cnnpipe.serving.export import KerasPredictor, Predictor
from cnnpipe.serving.pyfunc import (
    KERAS_ARTIFACT,
    META_ARTIFACT,
    ImageModel,
    artifact_path,
)

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


def model_input(image: Image.Image, shape: Sequence[int | None], path: Path) -> np.ndarray:
    """One model input ``(1, H, W, C)`` float32 in [0, 1]: the served model's own preprocessing."""
    return served_as(shape).model_input([image], [str(path)])


def served_as(shape: Sequence[int | None], kind: str = "class", class_names: Sequence[str] = ()) -> ImageModel:
    """The :class:`ImageModel` of a model of input ``shape`` ``(H, W, C)`` (no weights needed)."""
    height, width, channels = shape
    if height is None or height != width:
        raise ModelError(f"predict feeds square images; this model's input is {height}x{width}x{channels}")
    return ImageModel().configure(kind, class_names, (None, *shape))


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
    opened from ``path``, through the served model's preprocessing and answers (see
    :func:`answer`)."""
    if not hasattr(model, "backend"):  # a Keras model rather than a predictor
        model = KerasPredictor(model)
    return answer(served_as(model.input_shape[1:], kind, class_names), model, path, image, force=force)


def answer(served: ImageModel, predictor: Any, path: Path, image: Image.Image, *, force: bool = False) -> Prediction:
    """``served``'s answer for ``image`` (opened from ``path``), its forward pass run by
    ``predictor``: a class, a class + box (in the image's pixels), or a mask written atomically
    beside the input (:func:`mask_path`); an existing file there is overwritten only with ``force``."""
    (found,) = served.answers(predictor(served.model_input([image], [str(path)])), [image.size])
    if served.kind == "mask":
        labels = found["mask"]
        scale = 255 if found["binary"] else 1  # binary: visible black/white; multiclass: label ids
        target = mask_path(path)
        check_mask_targets([path], force)
        with atomic_file(target, "wb") as f:
            Image.fromarray((labels * scale).astype(np.uint8)).save(f, format="PNG")
        return Prediction(path, mask_path=target, coverage=float(np.mean(labels != 0)))
    box = tuple(found[k] for k in "xywh") if served.kind == "box" else None
    return Prediction(path, found["class"], found["probability"], box=box)


def load_registered_model(version: Any) -> ImageModel:
    """The :class:`ImageModel` of a registered version, from its artifacts: the Keras model in
    safe mode (no Lambda bytecode), never a pickle or a SavedModel a tampered store could hold.
    A version registered before models were pyfuncs (a bare ``keras`` flavor) loads too."""
    import mlflow.artifacts
    from mlflow.models import Model

    uri = f"models:/{version.name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="cnnpipe-predict-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        try:
            mlmodel = Model.load(str(local / "MLmodel")).to_dict()
        except Exception as err:  # noqa: BLE001 - any unreadable MLmodel file
            raise ModelError(f"{uri}: no readable MLmodel file ({type(err).__name__}: {err})") from None
        try:
            if "keras" in mlmodel.get("flavors", {}):
                return _keras_flavor(local, mlmodel["flavors"]["keras"], version, uri)
            return ImageModel().load(artifact_path(local, mlmodel, KERAS_ARTIFACT),
                                     artifact_path(local, mlmodel, META_ARTIFACT))
        except ModelError as err:
            raise ModelError(f"{uri}: {err}") from None


def _keras_flavor(local: Path, flavor: dict[str, Any], version: Any, uri: str) -> ImageModel:
    if flavor.get("save_exported_model"):
        raise ModelError(f"not a .keras model (flavor {flavor!r}); predict loads only those, in safe mode")
    path = local / flavor.get("data", "data")
    path = (path / "model.keras") if path.is_dir() else path.with_name(path.name + ".keras")
    if not path.resolve().is_relative_to(local.resolve()):
        raise ModelError(f"the keras flavor points outside the model ({flavor.get('data')})")
    meta = {"kind": version.tags.get("cnnpipe.kind", "class"),
            "class_names": json.loads(version.tags.get("cnnpipe.class_names", "[]"))}
    meta_file = local / "cnnpipe.json"
    meta_file.write_text(json.dumps(meta))
    return ImageModel().load(path, meta_file)


def choose_backend(model: Any, inputs: list[np.ndarray], backend: str) -> Predictor:
    """The fastest backend allowed by ``backend`` (auto, tflite, keras) whose outputs match
    Keras on these inputs plus a few seeded random ones (parity); Keras when none does (auto).
    Says in one line which backend predicts and why; ``tflite`` that cannot serve is an error."""
    if backend == "keras":
        log.info("predicting with keras (--backend keras)")
        return KerasPredictor(model)
    noise = np.random.default_rng(0).random((8, *inputs[0].shape[1:]), dtype=np.float32)
    probe = np.concatenate([*inputs, noise])
    allowed = backends.BACKENDS if backend == "auto" else (backend,)
    predictor, checks = backends.choose_predictor(model, probe, allowed, cache=backends.cache_dir())
    why = "; ".join(f"{c.backend}: {c.reason()}" for c in checks) or "no other backend to try"
    if backend != "auto" and predictor.backend != backend:
        raise ModelError(f"--backend {backend}: {backend} cannot serve this model ({why}); "
                         "use --backend auto (falls back to keras) or --backend keras")
    log.info("predicting with %s (%s)", predictor.backend, why)
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
    if version.tags.get("cnnpipe.kind", "class") == "mask":
        check_mask_targets(list(images), force)
    served = load_registered_model(version)
    if served.kind == "mask":
        check_mask_targets(list(images), force)
    inputs = [served.model_input([image], [str(path)]) for path, image in images.items()]
    predictor = choose_backend(served.model, inputs, backend)
    for path, image in images.items():
        yield answer(served, predictor, path, image, force=force)
