"""Image and mask files (PNG, JPEG, ...) -> uint8 arrays of one size and mode.

Every user image goes through here, so every bad file fails the same way: a DataError that
names the file and the problem. Images of any mode are converted (palette, RGBA, 16-bit,
grayscale <-> RGB) and resized to a square side; masks keep their values (nearest neighbour).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnpipe.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_MODES = {1: "L", 3: "RGB"}
# A decompression bomb is an error, not a warning: the Pillow default only warns below 2x.
Image.MAX_IMAGE_PIXELS = 100_000_000


@dataclass(frozen=True)
class Loaded:
    """One image as the model sees it plus the facts validate checks about the file."""

    pixels: np.ndarray  # uint8 (side, side) or (side, side, 3)
    height: int  # of the file, before resizing
    width: int
    mode: str  # the file's PIL mode, before conversion
    sha256: str  # of the converted, full-size pixels: equal pictures in two splits are a leak


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        size = path.stat().st_size if path.exists() else 0
        what = "an empty (zero-byte) file" if size == 0 else f"not a readable image ({type(err).__name__}: {err})"
        raise DataError(f"{path}: {what}") from None
    if image.width < 1 or image.height < 1:
        raise DataError(f"{path}: image has no pixels ({image.width}x{image.height})")
    return image


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to L or RGB; alpha is composited over black, 16-bit is scaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        peak = max(float(wide.max()), 1.0)
        image = Image.fromarray(np.rint(wide * (255.0 / max(peak, 255.0))).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    return image.convert(_MODES[channels])


def load_image(path: Path, side: int, channels: int) -> Loaded:
    """Read ``path`` as ``channels`` (1 or 3) uint8 pixels resized to ``side`` x ``side``."""
    image = _open(path)
    mode = image.mode
    converted = _to_mode(image, channels)
    full = np.asarray(converted)
    digest = hashlib.sha256(np.ascontiguousarray(full).tobytes()).hexdigest()
    if converted.size != (side, side):
        # Antialiased bilinear: shrinking a photo without it aliases fine texture.
        converted = converted.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=None)
    return Loaded(np.asarray(converted, dtype=np.uint8), image.height, image.width, mode, digest)


def load_mask(path: Path) -> np.ndarray:
    """A mask file's values, uint8 (H, W), unchanged: binary (0/255, 0/1) or class indices."""
    image = _open(path)
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
