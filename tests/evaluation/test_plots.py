"""Figures are written as real, deterministic PNGs; Grad-CAM gives [0, 1] maps of the input size,
with heat on every example of a trained classifier."""

import csv

import numpy as np
import pytest

from cnnpipe.evaluation import plots
from cnnpipe.evaluation.gradcam import gradcam, zero_maps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["tee", "bag", "boot"]


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def _no_temp_files(folder):
    return not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_confusion_heatmap_is_a_deterministic_png(tmp_path):
    cm = np.array([[5, 1, 0], [0, 3, 2], [1, 0, 0]])  # last class: a row summing to 1
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    plots.confusion_heatmap(cm, NAMES, a)
    plots.confusion_heatmap(cm, NAMES, b)
    assert _is_png(a)
    assert a.read_bytes() == b.read_bytes()  # same data, same bytes: DVC sees no change
    assert _no_temp_files(tmp_path)


def test_confusion_heatmap_handles_an_empty_row(tmp_path):
    plots.confusion_heatmap(np.zeros((3, 3), int), NAMES, tmp_path / "c.png")
    assert _is_png(tmp_path / "c.png")


def test_confusion_csv_feeds_dvc_confusion_template(tmp_path):
    path = tmp_path / "confusion.csv"
    plots.confusion_csv(np.array([0, 2, 1]), np.array([0, 1, 1]), NAMES, path)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"actual": "tee", "predicted": "tee"},
        {"actual": "boot", "predicted": "bag"},
        {"actual": "bag", "predicted": "bag"},
    ]


def test_box_and_mask_grids(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 16, 16, 1), dtype=np.uint8)
    true_boxes = np.tile([0.1, 0.2, 0.5, 0.4], (5, 1)).astype(np.float32)
    pred_boxes = np.tile([0.2, 0.2, 0.5, 0.5], (5, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1])
    preds = np.array([0, 2, 2, 0, 0])
    plots.box_grid(images, true_boxes, pred_boxes, labels, preds, NAMES, tmp_path / "boxes.png")
    masks = (rng.random((5, 16, 16)) > 0.5).astype(np.uint8)
    pred_masks = (rng.random((5, 16, 16)) > 0.5).astype(np.uint8)
    plots.mask_overlay_grid(images, masks, pred_masks, tmp_path / "masks.png")
    assert _is_png(tmp_path / "boxes.png") and _is_png(tmp_path / "masks.png")
    assert _no_temp_files(tmp_path)


def test_grids_accept_float_images_and_a_single_example(tmp_path):
    img = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8, 1)
    plots.gradcam_grid(img, img[..., 0], np.array([1]), np.array([1]), NAMES, tmp_path / "g.png")
    assert _is_png(tmp_path / "g.png")


# --------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------


def _tiny_classifier(separate_softmax: bool = False):
    """The contracted shape: input -> nested conv "backbone" -> linear chain -> softmax."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    b_in = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(b_in)
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(h)
    backbone = keras.Model(b_in, h, name="backbone")
    x = backbone(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    if separate_softmax:
        x = keras.layers.Dense(3)(x)
        out = keras.layers.Softmax()(x)
    else:
        out = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("separate_softmax", [False, True])
def test_gradcam_maps_in_unit_range_at_input_size(separate_softmax):
    model = _tiny_classifier(separate_softmax)
    images = np.random.default_rng(1).random((3, 8, 8, 1)).astype(np.float32)
    maps = gradcam(model, images)
    assert maps.shape == (3, 8, 8)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # Each map is either normalized to a peak of 1 or all zero (no positive evidence).
    peaks = maps.reshape(3, -1).max(axis=1)
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))


def test_gradcam_explicit_class_indices():
    model = _tiny_classifier()
    images = np.random.default_rng(2).random((2, 8, 8, 1)).astype(np.float32)
    one = gradcam(model, images, class_index=2)
    per_image = gradcam(model, images, class_index=[2, 2])
    np.testing.assert_allclose(one, per_image, atol=1e-6)
    assert one.shape == (2, 8, 8)


def test_gradcam_of_constant_zero_features_is_all_zero():
    import keras

    inp = keras.Input((8, 8, 1))
    b_in = keras.Input((8, 8, 1))
    # A relu over a zero-initialized conv: the feature map is identically 0.
    h = keras.layers.Conv2D(2, 3, padding="same", activation="relu", kernel_initializer="zeros")(b_in)
    x = keras.Model(b_in, h, name="backbone")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    maps = gradcam(model, np.ones((2, 8, 8, 1), np.float32))
    assert maps.shape == (2, 8, 8) and not maps.any()


def test_gradcam_uses_scores_before_the_softmax():
    # Dense(softmax) and Dense + Softmax with the same weights must explain the same logits.
    fused, split = _tiny_classifier(False), _tiny_classifier(True)
    split.get_layer("backbone").set_weights(fused.get_layer("backbone").get_weights())
    dense = next(layer for layer in split.layers if layer.__class__.__name__ == "Dense")
    dense.set_weights(fused.layers[-1].get_weights())
    images = np.random.default_rng(3).random((2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(gradcam(fused, images), gradcam(split, images), atol=1e-5)


def test_gradcam_of_no_images_is_empty(tmp_path):
    maps = gradcam(_tiny_classifier(), np.zeros((0, 8, 8, 1), np.float32))
    assert maps.shape == (0, 8, 8)
    plots.gradcam_grid(np.zeros((0, 8, 8, 1)), maps, np.zeros(0), np.zeros(0), NAMES, tmp_path / "g.png")
    assert _is_png(tmp_path / "g.png")


def _png_text_keys(data: bytes) -> list[bytes]:
    """The keys of a PNG's text chunks (tEXt/iTXt/zTXt: where Software and dates would sit)."""
    keys, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keys.append(data[pos + 8:pos + 8 + length].split(b"\0")[0])
        if kind == b"tIME":
            keys.append(b"tIME")
        pos += 12 + length
    return keys


def test_every_evaluate_figure_is_byte_identical_when_drawn_again(tmp_path):
    # Same data -> same bytes, whatever the matplotlib version: dvc.lock stays put on a rerun.
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    boxes = np.array([[0.1, 0.1, 0.5, 0.5]] * 3, np.float32)
    labels = np.array([0, 1, 2])

    def draw(folder):
        plots.confusion_heatmap(np.array([[2, 1, 0], [0, 3, 0], [1, 0, 4]]), NAMES, folder / "confusion.png")
        plots.box_grid(images, boxes, boxes[::-1], labels, labels[::-1], NAMES, folder / "boxes.png")
        plots.mask_overlay_grid(images, images > 128, images > 64, folder / "masks.png")
        plots.gradcam_grid(images, images[..., 0] / 255.0, labels, labels, NAMES, folder / "gradcam.png")
        plots.accuracy_bars({"scratch": 0.3, "feature_extraction": 0.5, "fine_tuning": 0.6},
                            folder / "accuracy.png")
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    first, again = draw(tmp_path / "a"), draw(tmp_path / "b")
    assert len(first) == 5 and first == again
    for name, data in first.items():
        assert data.startswith(PNG_MAGIC), name
        assert _png_text_keys(data) == [], name  # no Software, no date


# --------------------------------------------------------------------------------------
# Grad-CAM of a trained classifier
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """The real classifier architecture (flatten head), small, trained a few epochs on the tests'
    tiny silhouettes under mixed bfloat16: the setting whose Grad-CAM maps came out blank."""
    import keras
    from helpers import write_tiny_idx_dataset

    from cnnpipe.data.images import to_model_input
    from cnnpipe.models.classifier import build_classifier
    from cnnpipe.training.precision import precision_policy

    data = write_tiny_idx_dataset(tmp_path_factory.mktemp("tiny"), n_train=600, n_test=64)
    keras.utils.set_random_seed(0)
    with precision_policy("mixed_bfloat16"):
        model = build_classifier((28, 28, 1), 10, filters=[8, 16], convs_per_block=1, dropout=0.1, dense=32)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        model.fit(to_model_input(data.x_train), data.y_train, epochs=3, batch_size=32, verbose=0)
    return model, to_model_input(data.x_test)


def test_gradcam_of_a_trained_classifier_shows_heat_on_every_example(trained_classifier):
    model, images = trained_classifier
    assert model.get_layer("backbone").output.dtype == "bfloat16"  # the case that lost the heat
    maps = gradcam(model, images)
    assert maps.shape == images.shape[:3] and maps.dtype == np.float32
    assert zero_maps(maps) == 0
    flat = maps.reshape(len(maps), -1)
    assert (flat.std(axis=1) > 0).all()  # no constant map either
    # Heat is localized: a map covers part of the image, not all of it.
    assert np.median((flat > 0.5).mean(axis=1)) < 0.5
