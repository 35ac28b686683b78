"""IDX reader/writer: round trips, the exact byte layout, and every rejection names file and problem."""

import gzip

import numpy as np
import pytest

from cnnpipe.data.raw.idx import encode_idx, read_idx, read_idx_pair, write_idx
from cnnpipe.errors import DataError


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / "a-idx3"  # no .gz suffix: gzip is detected by its magic bytes
    write_idx(path, array, gz=gz)
    assert path.read_bytes().startswith(b"\x1f\x8b") == gz
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # writable, not a view of the file bytes


def test_byte_layout_is_big_endian_idx():
    data = encode_idx(np.array([[1, -2, 3]], dtype=np.int16))
    assert data == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 3]) + b"\x00\x01\xff\xfe\x00\x03"


def test_gzip_output_is_deterministic(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.gz", array, gz=True)
    write_idx(tmp_path / "b.gz", array, gz=True)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_unsupported_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot write dtype bool"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=bool))


GOOD = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x12\x34\x08\x02" + GOOD[4:], "wrong IDX magic number: expected 00 00 <dtype code> <ndim>, found 12 34 08 02"),
        (b"\x00\x00\x0a\x02" + GOOD[4:], "unknown IDX dtype code 0x0A"),
        (b"\x00\x00\x08", "truncated IDX header: expected at least 4 bytes, found 3"),
        (GOOD[:9], "truncated IDX header: 2 dimensions need 12 bytes, found 9"),
        (GOOD[:-2], "truncated IDX data: shape (2, 3) of uint8 needs 18 bytes, found 16"),
        (GOOD + b"xyz", "trailing garbage: 3 bytes after the 18 bytes"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip data"),
        (gzip.compress(GOOD)[:-10], "corrupt gzip data"),
        # 65536 ** 4 = 2 ** 64: an int64 product wraps to 0 and a header-only file "fits".
        (bytes([0, 0, 0x08, 4]) + (2**16).to_bytes(4, "big") * 4,
         f"truncated IDX data: shape (65536, 65536, 65536, 65536) of uint8 needs {2**64 + 20} bytes, found 20"),
    ],
    ids=["magic", "dtype", "short-magic", "short-dims", "short-data", "trailing", "bad-gzip", "cut-gzip",
         "dims-overflow"],
)
def test_malformed_files_name_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(err.value).startswith(f"{path}: ")
    assert problem in str(err.value)


def test_gzipped_corruption_inside_is_reported_too(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD[:-1]))
    with pytest.raises(DataError, match=r"x\.gz: truncated IDX data"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope: cannot read"):
        read_idx(tmp_path / "nope")


def test_pair_round_trip(tmp_path):
    images = np.zeros((4, 2, 2), np.uint8)
    labels = np.arange(4, dtype=np.uint8)
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels, gz=True)
    x, y = read_idx_pair(tmp_path / "i", tmp_path / "l")
    assert x.shape == (4, 2, 2) and list(y) == [0, 1, 2, 3]


def test_pair_counts_must_agree(tmp_path):
    write_idx(tmp_path / "imgs", np.zeros((5, 2, 2), np.uint8))
    write_idx(tmp_path / "lbls", np.zeros(4, np.uint8))
    with pytest.raises(DataError) as err:
        read_idx_pair(tmp_path / "imgs", tmp_path / "lbls")
    msg = str(err.value)
    assert "counts disagree" in msg
    assert f"{tmp_path / 'imgs'} has 5 images" in msg and f"{tmp_path / 'lbls'} has 4 labels" in msg


def test_pair_labels_must_be_1d(tmp_path):
    write_idx(tmp_path / "imgs", np.zeros((4, 2, 2), np.uint8))
    write_idx(tmp_path / "lbls", np.zeros((4, 1), np.uint8))
    with pytest.raises(DataError, match=r"lbls: labels must be 1-D, got shape \(4, 1\)"):
        read_idx_pair(tmp_path / "imgs", tmp_path / "lbls")
