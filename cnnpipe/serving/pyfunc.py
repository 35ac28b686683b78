"""The registered model as plain MLflow sees it: a pyfunc (:class:`ImageModel`) that takes raw
images and applies exactly the preprocessing training used, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` answer like ``cnnpipe predict`` (which runs the same class).

Inputs (:func:`to_images`): uint8 arrays ``N x H x W`` (gray) or ``N x H x W x C`` (C = 1, 3 or
4), any size; or a list of encoded image files (PNG, JPEG, ... bytes, or base64 text). Each is
decoded by :mod:`cnnpipe.data.images` (the one decoder of prepare), converted to the channels
the model was trained on and resized to its side by :func:`~cnnpipe.data.images.to_pixels`, and
scaled by :func:`~cnnpipe.data.images.to_model_input`.

Outputs (:meth:`ImageModel.answers`): per image, the class name and its probability (and every
class's probability); a localizer adds its box in the input image's pixels (``x, y, w, h``); a
U-Net answers a mask at the input's size (0/1, or the class index for multiclass, 0 background).

The model's artifacts: the ``.keras`` file (loaded in safe mode) and ``cnnpipe.json`` (task,
kind, class names). The ``cnnpipe`` package travels in the model's ``code/`` folder
(``code_paths``), so its custom layers load where only the pinned packages are installed; the
model itself is logged as code (:data:`MODEL_CODE`), not as a pickle.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
from PIL import Image

from cnnpipe.data.images import open_image, to_model_input, to_pixels
from cnnpipe.data.masks import decide_mask
from cnnpipe.errors import DataError, ModelError

KERAS_ARTIFACT = "keras_model"
META_ARTIFACT = "meta"
META_FILE = "cnnpipe.json"
_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def array_image(array: Any, name: str) -> Image.Image:
    """One uint8 image array ``H x W`` or ``H x W x C`` (C 1, 3, 4) as a Pillow image."""
    pixels = np.asarray(array)
    if pixels.dtype != np.uint8:
        raise DataError(f"{name}: images are uint8 pixels (0..255), not {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(pixels), mode="L")
    if pixels.ndim != 3 or pixels.shape[-1] not in _ARRAY_MODES:
        raise DataError(f"{name}: an image is H x W or H x W x C (C = 1, 3 or 4), not shape {pixels.shape}")
    return Image.fromarray(np.ascontiguousarray(pixels), mode=_ARRAY_MODES[pixels.shape[-1]])


def _encoded_image(item: bytes | str, name: str) -> Image.Image:
    if isinstance(item, str):
        try:
            item = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"{name}: text input is read as a base64-encoded image file; this is not base64") from None
    return open_image(Path(name), bytes(item))


def to_images(model_input: Any) -> list[Image.Image]:
    """What a caller sends (see the module doc; also a DataFrame or dict of one column) as
    Pillow images, in order."""
    if hasattr(model_input, "columns"):  # a pandas DataFrame: its one column of images
        if len(model_input.columns) != 1:
            raise DataError(f"send one column of images, not {list(model_input.columns)}")
        model_input = list(model_input.iloc[:, 0])
    if isinstance(model_input, Mapping):
        if len(model_input) != 1:
            raise DataError(f"send one input of images, not {sorted(model_input)}")
        (model_input,) = model_input.values()
    if isinstance(model_input, (bytes, str, Image.Image)):
        model_input = [model_input]
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim not in (3, 4):
            raise DataError(f"input: a batch of images is N x H x W or N x H x W x C, not shape {model_input.shape}")
        model_input = list(model_input)
    images = []
    for i, item in enumerate(model_input):
        name = f"image {i}"
        if isinstance(item, Image.Image):
            images.append(item)
        elif isinstance(item, (bytes, bytearray, str)):
            images.append(_encoded_image(item, name))
        else:
            images.append(array_image(item, name))
    if not images:
        raise DataError("input: no images")
    return images


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class ImageModel(mlflow.pyfunc.PythonModel):
    """A trained cnnpipe model behind raw images (see the module doc)."""

    # The signature is the input schema: MLflow neither wraps predict by its type hints nor warns.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        self.load(Path(context.artifacts[KERAS_ARTIFACT]), Path(context.artifacts[META_ARTIFACT]))

    def load(self, keras_file: Path, meta_file: Path, producer: str = "register") -> ImageModel:
        """Load the artifacts (also :mod:`cnnpipe.serving.predict`'s way in); ``producer``
        names the stage that writes ``keras_file`` in errors."""
        from cnnpipe.training.outputs import load_model

        try:
            meta = json.loads(meta_file.read_text())
            self.kind, self.class_names = str(meta["kind"]), [str(n) for n in meta["class_names"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelError(f"{meta_file}: not a cnnpipe model description ({type(err).__name__}: {err})") from None
        self.model = load_model(keras_file, producer=producer)
        return self.configure(self.kind, self.class_names, self.model.input_shape, keras_file)

    def configure(self, kind: str, class_names: Sequence[str], input_shape: Sequence[int | None],
                  name: Any = "model") -> ImageModel:
        """What the model answers (``kind``: class, box, mask) and reads (``input_shape``)."""
        _, height, width, channels = input_shape
        if height is None or height != width or channels not in (1, 3):
            raise ModelError(f"{name}: serves square 1- or 3-channel inputs, not {height}x{width}x{channels}")
        self.kind, self.class_names = kind, list(class_names)
        self.side, self.channels = int(height), int(channels)
        return self

    def model_input(self, images: Sequence[Image.Image], names: Sequence[str] | None = None) -> np.ndarray:
        """The float32 batch ``(N, side, side, channels)`` the model reads: prepare's pixels of
        each image, then the training scaling."""
        names = names or [f"image {i}" for i in range(len(images))]
        pixels = [to_pixels(image, self.side, self.channels, Path(n)).pixels for image, n in zip(images, names)]
        return to_model_input(np.stack(pixels).reshape(len(pixels), self.side, self.side, self.channels))

    def answers(self, out: Any, sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """The model's raw outputs for images of ``sizes`` (width, height) as one answer each."""
        if self.kind == "mask":
            probs = np.asarray(out)
            return [{"mask": np.asarray(Image.fromarray(decide_mask(p).astype(np.uint8)).resize(
                size, Image.Resampling.NEAREST)), "binary": p.shape[-1] == 1} for p, size in zip(probs, sizes)]
        classes = np.asarray(out["class"] if self.kind == "box" else out, dtype=np.float64)
        found = []
        for i, probs in enumerate(classes):
            k = int(np.argmax(probs))
            answer: dict[str, Any] = {
                "class": self.class_names[k] if k < len(self.class_names) else str(k),
                "probability": float(probs[k]), "probabilities": [float(p) for p in probs]}
            if self.kind == "box":
                (width, height), fractions = sizes[i], np.asarray(out["box"], dtype=np.float64)[i]
                answer.update(zip("xywh", (round(v * s) for v, s in zip(fractions, (width, height) * 2))))
            found.append(answer)
        return found

    # No type hints: MLflow would try to read them as an input schema (the signature is it).
    def predict(self, context, model_input, params=None):
        """Class/box answers as a DataFrame (one row per image); masks as a uint8 array
        ``(N, H, W)`` when the inputs share a size, else a list of arrays."""
        import pandas as pd

        from cnnpipe.serving.export import KerasPredictor, predict_batched

        images = to_images(model_input)
        out = predict_batched(KerasPredictor(self.model), self.model_input(images), batch_size=64)
        found = self.answers(out, [image.size for image in images])
        if self.kind != "mask":
            return pd.DataFrame(found)
        masks = [a["mask"] for a in found]
        return np.stack(masks) if len({m.shape for m in masks}) == 1 else masks


# --------------------------------------------------------------------------------------
# Logging it (the register stage)
# --------------------------------------------------------------------------------------


# The model's code, as MLflow's "models from code" (no pickle): run when the model is loaded,
# after MLflow has put the model's code/ folder (the shipped cnnpipe package) on sys.path.
MODEL_CODE = """from mlflow.models import set_model

from cnnpipe.serving.pyfunc import ImageModel

set_model(ImageModel())
"""


def model_files(keras_file: Path, meta: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """What to log for a model (:func:`cnnpipe.tracking.keras.log_pyfunc_model`), written under
    ``folder``: the code that builds it, a copy of the ``cnnpipe`` package (no caches) for
    ``code_paths``, and its artifacts (``keras_file``, ``meta`` as cnnpipe.json)."""
    import cnnpipe

    (folder / "image_model.py").write_text(MODEL_CODE)
    package = folder / "code" / "cnnpipe"
    shutil.copytree(Path(cnnpipe.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    meta_file = folder / META_FILE
    meta_file.write_text(json.dumps(dict(meta), indent=2, sort_keys=True))
    return {"python_model": str(folder / "image_model.py"), "code_paths": [str(package)],
            "artifacts": {KERAS_ARTIFACT: str(keras_file), META_ARTIFACT: str(meta_file)}}


def loaded_model(keras_file: Path, meta: Mapping[str, Any], folder: Path, producer: str) -> tuple[ImageModel, dict[str, str]]:
    """The model as it will be served (to compute its output example) and what to log
    (:func:`model_files`)."""
    files = model_files(keras_file, meta, folder)
    return ImageModel().load(keras_file, Path(files["artifacts"][META_ARTIFACT]), producer), files


def artifact_path(local: Path, mlmodel: Mapping[str, Any], name: str) -> Path:
    """Where the artifact ``name`` of a downloaded pyfunc model lies, inside ``local``."""
    try:
        relative = mlmodel["flavors"]["python_function"]["artifacts"][name]["path"]
    except (KeyError, TypeError):
        raise ModelError(f"{local}: not a cnnpipe image model (no {name!r} artifact)") from None
    path = (local / relative).resolve()
    if not path.is_relative_to(local.resolve()):
        raise ModelError(f"{local}: the {name!r} artifact points outside the model ({relative})")
    return path
