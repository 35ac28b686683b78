"""The one image decoder (cnnpipe/data/images.py) and the shared conventions around it: the
rule for every image type, prepare/predict parity (no training/serving skew), the one uint8 ->
float scaling and the two mask conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import section
from PIL import Image

from cnnpipe.data.formats.folders import read_class_folders
from cnnpipe.data.images import load_image, open_image, to_model_input
from cnnpipe.data.masks import class_index_masks, decide_mask
from cnnpipe.errors import DataError
from cnnpipe.serving import predict

RAMP = np.tile(np.arange(0, 256, 17, dtype=np.uint8), (16, 1))  # 16 x 16, 0..255


# --------------------------------------------------------------------------------------
# The rule, type by type
# --------------------------------------------------------------------------------------


def test_16_bit_images_use_a_fixed_full_scale_not_their_peak(tmp_path):
    twelve_bit = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 16)  # 0..4080: 12-bit data
    Image.fromarray(twelve_bit).save(tmp_path / "12bit.png")
    assert Image.open(tmp_path / "12bit.png").mode == "I;16"
    pixels = load_image(tmp_path / "12bit.png", 16, 1).pixels
    np.testing.assert_array_equal(pixels, np.rint(twelve_bit / 257.0).astype(np.uint8))  # max 16, not 255


def test_float_images_are_read_as_0_to_1_not_truncated_to_black(tmp_path):
    values = RAMP.astype(np.float32) / 255.0
    values[0, 0], values[0, 1], values[0, 2] = -0.5, 1.5, np.nan  # clipped; NaN is black
    Image.fromarray(values).save(tmp_path / "float.tiff")
    assert Image.open(tmp_path / "float.tiff").mode == "F"
    pixels = load_image(tmp_path / "float.tiff", 16, 1).pixels
    expected = RAMP.copy()
    expected[0, :3] = (0, 255, 0)
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "I", "I;16", "F"])
def test_every_mode_gives_8_bit_gray_or_rgb_of_the_requested_side(tmp_path, mode):
    rgb = np.dstack([RAMP, RAMP[::-1], np.full_like(RAMP, 128)])
    sources = {
        "1": lambda: Image.fromarray(RAMP > 127).convert("1"),
        "L": lambda: Image.fromarray(RAMP),
        "P": lambda: Image.fromarray(rgb).quantize(32),
        "RGB": lambda: Image.fromarray(rgb),
        "RGBA": lambda: Image.fromarray(np.dstack([rgb, np.full_like(RAMP, 255)])),
        "LA": lambda: Image.fromarray(np.dstack([RAMP, np.full_like(RAMP, 255)])),
        "CMYK": lambda: Image.fromarray(rgb).convert("CMYK"),
        "YCbCr": lambda: Image.fromarray(rgb).convert("YCbCr"),
        "LAB": lambda: Image.merge("LAB", [Image.fromarray(c) for c in (RAMP, RAMP[::-1], np.full_like(RAMP, 128))]),
        "I": lambda: Image.fromarray(RAMP.astype(np.int32) * 257),
        "I;16": lambda: Image.fromarray(RAMP.astype(np.uint16) * 257),
        "F": lambda: Image.fromarray(RAMP.astype(np.float32) / 255.0),
    }
    image = sources[mode]()
    path = tmp_path / f"img.{'tiff' if mode in ('CMYK', 'YCbCr', 'LAB', 'I', 'F') else 'png'}"
    image.save(path)
    assert Image.open(path).mode == mode
    for channels, shape in ((1, (8, 8)), (3, (8, 8, 3))):
        pixels = load_image(path, 8, channels).pixels
        assert pixels.dtype == np.uint8 and pixels.shape == shape
    if mode in ("L", "I", "I;16", "F", "LA"):  # gray sources keep their values exactly
        np.testing.assert_array_equal(load_image(path, 16, 1).pixels, RAMP)


def test_transparency_is_composited_over_black_also_for_a_palette(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[2:6, 2:6, 3] = 255, 255  # white, opaque only in the centre
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba).convert("P").save(tmp_path / "p.png", transparency=0)
    for name in ("rgba.png", "p.png"):
        pixels = load_image(tmp_path / name, 8, 3).pixels
        assert tuple(pixels[3, 3]) == (255, 255, 255)
    assert tuple(load_image(tmp_path / "rgba.png", 8, 3).pixels[0, 0]) == (0, 0, 0)


def test_the_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((10, 30), np.uint8)
    wide[:, :5] = 255  # a bright left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.fromarray(wide).save(tmp_path / "turned.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "turned.jpg", 30, 1)
    assert (loaded.height, loaded.width) == (30, 10)  # upright: taller than wide
    image = open_image(tmp_path / "turned.jpg")
    assert image.size == (10, 30) and np.asarray(image)[:5].mean() > 200  # the edge is now on top


def test_an_undecodable_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "broken.png"
    Image.fromarray(RAMP).save(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as err:
        load_image(path, 8, 1)
    assert str(err.value).startswith(f"{path}: not a readable image (") and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------
# Prepare and predict read a file identically
# --------------------------------------------------------------------------------------


class Recorder:
    """A stand-in predictor: records what predict feeds the model."""

    backend = "recorder"

    def __init__(self, side: int, channels: int) -> None:
        self.input_shape = (None, side, side, channels)
        self.seen: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(x)
        return np.array([[0.25, 0.75]], np.float32)


def _class_folders(root: Path, files: dict[str, Image.Image]) -> Path:
    for split in ("train", "test"):
        for label in ("a", "b"):
            for name, image in files.items():
                folder = root / split / label
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / name)
    return root


def _prepared_and_served(root: Path, side: int, channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prepared pixels, predict's model input) of every train item of a folders dataset."""
    params = section("datasets.classification", format="folders", path=str(root), image_size=side,
                     channels=channels)
    data = read_class_folders(params, seed=0)
    pairs = []
    for pixels, row in zip(data.splits["train"].images, data.splits["train"].rows):
        path = Path(row["file"])
        model = Recorder(side, channels)
        predict.predict_image(model, "class", ["a", "b"], path, open_image(path))
        (fed,) = model.seen
        pairs.append((pixels, fed))
    return pairs


def test_an_rgb_folder_dataset_is_served_the_pixels_it_was_prepared_with(tmp_path):
    rng = np.random.default_rng(0)
    files = {f"photo{k}.{ext}": Image.fromarray(rng.integers(0, 256, (23 + k, 31, 3), dtype=np.uint8))
             for k, ext in enumerate(("png", "jpg", "bmp"))}
    pairs = _prepared_and_served(_class_folders(tmp_path / "rgb", files), side=16, channels=3)
    assert len(pairs) == 6
    for prepared, fed in pairs:
        assert prepared.shape == (16, 16, 3) and fed.shape == (1, 16, 16, 3)
        assert len(np.unique(prepared.reshape(-1, 3), axis=0)) > 16  # colour, not gray x 3
        np.testing.assert_array_equal(fed[0], to_model_input(prepared))


@pytest.mark.parametrize("channels", [1, 3])
def test_12_bit_png_and_float_tiff_give_the_same_pixels_to_prepare_and_predict(tmp_path, channels):
    twelve_bit = (np.arange(20 * 24, dtype=np.uint16).reshape(20, 24) * 8)  # up to 3832 of 4095
    floats = (np.arange(20 * 24, dtype=np.float32).reshape(20, 24) / (20 * 24))
    files = {"deep.png": Image.fromarray(twelve_bit), "float.tiff": Image.fromarray(floats)}
    pairs = _prepared_and_served(_class_folders(tmp_path / "deep", files), side=16, channels=channels)
    assert len(pairs) == 4
    for prepared, fed in pairs:
        served = np.rint(fed[0] * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(served.reshape(prepared.shape), prepared)
        np.testing.assert_array_equal(fed[0].reshape(prepared.shape), to_model_input(prepared))
    deep = [p for p, _ in pairs if p.max() <= 15]  # 3832 / 257 = 14.9: still dark, not stretched
    assert len(deep) == 2


# --------------------------------------------------------------------------------------
# One scaling, two mask conventions
# --------------------------------------------------------------------------------------


def test_to_model_input_is_bit_identical_in_numpy_and_tf_data():
    import tensorflow as tf

    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    numpy_out = to_model_input(pixels)
    assert numpy_out.dtype == np.float32
    np.testing.assert_array_equal(numpy_out, pixels.astype(np.float32) / np.float32(255.0))  # today's formula
    (mapped,) = tf.data.Dataset.from_tensors(pixels).map(to_model_input).as_numpy_iterator()
    assert mapped.dtype == np.float32 and np.array_equal(mapped.view(np.uint32), numpy_out.view(np.uint32))
    floats = np.linspace(0, 1, 5, dtype=np.float64)
    assert to_model_input(floats).dtype == np.float32  # float input passes through


def test_decide_mask_thresholds_one_channel_and_takes_the_argmax_of_several():
    sigmoid = np.array([[[[0.49], [0.5]]]])
    np.testing.assert_array_equal(decide_mask(sigmoid), [[[False, True]]])
    softmax = np.array([[[[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]]])
    np.testing.assert_array_equal(decide_mask(softmax), [[[1, 0]]])


def test_class_index_masks_put_class_k_at_k_plus_1():
    masks = np.array([[[0, 1], [1, 0]], [[1, 1], [0, 0]]], np.uint8)
    out = class_index_masks(masks, np.array([0, 3]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[[0, 1], [1, 0]], [[4, 4], [0, 0]]])
