"""The IDX format of MNIST-like datasets: read (plain or gzip), write, and read an image/label pair.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values, big-endian, in C order. numpy only: never pickle.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cnnpipe.errors import DataError
from cnnpipe.io import atomic_file

GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> on-disk dtype (always big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[np.dtype, int] = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}


def read_bytes_maybe_gz(path: str | Path) -> bytes:
    """Return the file's bytes, gunzipped when they start with the gzip magic (whatever the suffix)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip data: {err}") from None


def parse_idx(data: bytes, name: str | Path) -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``name`` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX header: expected at least 4 bytes, found {len(data)}")
    if data[0:2] != b"\x00\x00":
        found = " ".join(f"{b:02x}" for b in data[:4])
        raise DataError(
            f"{name}: wrong IDX magic number: expected 00 00 <dtype code> <ndim>, found {found}"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02X}; known codes: {known}")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{name}: truncated IDX header: {ndim} dimensions need {header_len} bytes, found {len(data)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    # Python integers: np.prod in int64 wraps (65536 ** 4 is 0) and would pass a header-only file.
    expected = header_len + math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{name}: truncated IDX data: shape {dims} of {dtype.name} needs {expected} bytes, "
            f"found {len(data)}"
        )
    if len(data) > expected:
        raise DataError(
            f"{name}: trailing garbage: {len(data) - expected} bytes after the {expected} bytes "
            f"that shape {dims} of {dtype.name} needs"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header_len)
    # astype copies: the result is writable and native-endian, not a view of `data`.
    return flat.astype(dtype.newbyteorder("=")).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian array; DataError names file and problem."""
    return parse_idx(read_bytes_maybe_gz(path), path)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64)."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        supported = ", ".join(dt.name for dt in _CODES)
        raise ValueError(f"cannot write dtype {array.dtype} as IDX; supported: {supported}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX dimension sizes must fit uint32, got shape {array.shape}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | Path, array: np.ndarray, gz: bool = False) -> None:
    """Write ``array`` as an IDX file atomically; ``gz`` compresses it (deterministic bytes)."""
    data = encode_idx(array)
    if gz:
        data = gzip.compress(data, mtime=0)  # mtime=0: equal arrays give equal files
    with atomic_file(path) as f:
        f.write(data)


def check_pair(
    images: np.ndarray, labels: np.ndarray, images_name: str | Path, labels_name: str | Path
) -> None:
    """Reject an image/label pair whose shapes cannot belong together."""
    if labels.ndim != 1:
        raise DataError(f"{labels_name}: labels must be 1-D, got shape {labels.shape}")
    if images.ndim not in (3, 4):
        raise DataError(
            f"{images_name}: images must be (count, height, width[, channels]), got shape {images.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"image/label counts disagree: {images_name} has {len(images)} images, "
            f"{labels_name} has {len(labels)} labels"
        )


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read images and their labels; DataError if labels are not 1-D or the counts disagree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    check_pair(images, labels, images_path, labels_path)
    return images, labels
