"""Image and mask files (PNG, JPEG, TIFF, ...) -> uint8 arrays of one size and mode.

The ONE decoder of users' images: prepare reads every own-data image through
:func:`load_image`, ``cnnpipe predict`` reads every input through :func:`open_image` and
:func:`to_pixels`, so a model is served exactly the pixels it was trained on. The rule, the
same on both paths:

=========================================  ================================================
file (Pillow mode)                         becomes
=========================================  ================================================
any, with an EXIF orientation              turned upright first (``ImageOps.exif_transpose``)
``L`` (8-bit gray), ``RGB``                as is (Pillow decodes 48-bit RGB to 8-bit itself)
``1`` (bilevel)                            0 / 255
``I;16*`` (16-bit gray), ``I`` (32-bit)    value / 257, rounded, clipped to 0..255: a FIXED
                                           full scale (65535 -> 255), never the image's peak,
                                           so 12-bit data stays as dark as it is
``F`` (32-bit float, e.g. a float TIFF)    read as [0, 1]: value x 255, rounded, clipped
                                           (NaN -> 0)
``RGBA``, ``LA``, ``PA``, or a             composited over black (the models' background),
transparent colour (``P``/``L``/``RGB``)   then RGB
``P`` (palette), ``CMYK``, ``YCbCr``,      converted to RGB
``LAB``, ``HSV``, any other
=========================================  ================================================

then to ``channels`` (1: Pillow's ``L``, ITU-R 601-2 luma; 3: ``RGB``, gray repeated), then to
``side`` x ``side`` by antialiased bilinear resizing (skipped when already that size). A file
Pillow cannot decode is a one-line DataError naming it. Masks keep their values (nearest
neighbour). :func:`to_model_input` is the one uint8 -> float scaling (pixel / 255) of the
package, for numpy arrays and tf.data alike.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnpipe.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_MODES = {1: "L", 3: "RGB"}
# A decompression bomb is an error, not a warning: the Pillow default only warns below 2x.
Image.MAX_IMAGE_PIXELS = 100_000_000
# 16-bit full scale to 8 bits: 65535 / 257 = 255 exactly.
SIXTEEN_BIT_SCALE = 257.0
PIXEL_MAX = 255.0  # uint8 pixels -> [0, 1] model input


@dataclass(frozen=True)
class Loaded:
    """One image as the model sees it plus the facts validate checks about the file."""

    pixels: np.ndarray  # uint8 (side, side) or (side, side, 3)
    height: int  # upright (EXIF applied), before resizing
    width: int
    mode: str  # the file's PIL mode, before conversion
    sha256: str  # of the converted, full-size pixels: equal pictures in two splits are a leak


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def open_image(path: Path, data: bytes | None = None) -> Image.Image:
    """Decode ``path`` fully and turn it upright (EXIF orientation); any failure is a
    DataError naming the file: missing, a directory, empty, not an image, corrupt, too large.
    With ``data`` (encoded bytes, e.g. sent to a served model), those are decoded and ``path``
    only names them in errors."""
    if data is None and path.is_dir():
        raise DataError(f"{path}: is a directory; give image files (PNG or JPEG)")
    if data is None and not path.is_file():
        raise DataError(f"{path}: no such file")
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise DataError(f"{path}: an empty (zero-byte) file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path}: refusing to decode an image this large ({' '.join(str(err).split())})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable image ({_one_line(err)})") from None
    if upright.width < 1 or upright.height < 1:
        raise DataError(f"{path}: image has no pixels ({upright.width}x{upright.height})")
    return upright


def _gray8(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8), mode="L")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as 8-bit ``L`` (``channels`` 1) or ``RGB`` (3) by the rule of this module."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        image = _gray8(np.asarray(image, dtype=np.float64) / SIXTEEN_BIT_SCALE)
    elif mode == "F":
        image = _gray8(np.asarray(image, dtype=np.float64) * 255.0)
    elif mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")  # palette, CMYK, YCbCr, LAB, HSV: Pillow converts LAB only to RGB
    return image.convert(_MODES[channels])


def to_pixels(image: Image.Image, side: int, channels: int, path: Path) -> Loaded:
    """An opened image (:func:`open_image`) as ``channels`` (1 or 3) uint8 pixels, ``side`` x
    ``side``; ``path`` names the file in errors."""
    if channels not in _MODES:
        raise DataError(f"{path}: models read 1 or 3 channels, not {channels}")
    try:
        converted = to_mode(image, channels)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot convert a {image.mode} image to {_MODES[channels]} ({_one_line(err)})") from None
    full = np.asarray(converted)
    digest = hashlib.sha256(np.ascontiguousarray(full).tobytes()).hexdigest()
    if converted.size != (side, side):
        # Antialiased bilinear: shrinking a photo without it aliases fine texture.
        converted = converted.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=None)
    return Loaded(np.asarray(converted, dtype=np.uint8), image.height, image.width, image.mode, digest)


def load_image(path: Path, side: int, channels: int) -> Loaded:
    """Read ``path`` as ``channels`` (1 or 3) uint8 pixels resized to ``side`` x ``side``."""
    return to_pixels(open_image(path), side, channels, path)


def to_model_input(images: Any) -> Any:
    """uint8 pixels -> float32 in [0, 1] (pixel / 255); float input passes through as float32.

    The one scaling of the package: numpy arrays (evaluation, serving, prepare) and tf tensors
    (the tf.data map) take the same formula, so their results are bit-identical.
    """
    if isinstance(images, (np.ndarray, np.generic, list, tuple)):
        images = np.asarray(images)
        if images.dtype == np.uint8:
            return images.astype(np.float32) / np.float32(PIXEL_MAX)
        return images.astype(np.float32, copy=False)
    import tensorflow as tf  # a tensor: TensorFlow is already loaded

    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / PIXEL_MAX
    return tf.cast(images, tf.float32)


def load_mask(path: Path) -> np.ndarray:
    """A mask file's values, uint8 (H, W), unchanged: binary (0/255, 0/1) or class indices."""
    image = open_image(path)  # upright like its image
    if image.mode in ("L", "P", "1", "I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.dtype == bool:
            values = values.astype(np.uint8)
    elif image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise DataError(f"{path}: a mask must hold one value per pixel; this {image.mode} mask has colours")
        values = rgb[..., 0]
    else:
        raise DataError(f"{path}: unsupported mask mode {image.mode}; use 8-bit grayscale or palette PNG")
    if values.min() < 0 or values.max() > 255:
        raise DataError(f"{path}: mask values {values.min()}..{values.max()} do not fit 0..255")
    return values.astype(np.uint8)


def resize_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """Nearest neighbour, so a resized mask holds only values of the original (no blends)."""
    if mask.shape == (side, side):
        return mask
    return np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.NEAREST))
