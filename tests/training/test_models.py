"""Model builders: shapes, the shared backbone, safe-mode save/load round trips."""

import keras
import numpy as np
import pytest

from cnnpipe.config import ParamsError
from cnnpipe.errors import ModelError
from cnnpipe.models.backbone import build_backbone
from cnnpipe.models.classifier import build_classifier
from cnnpipe.models.localizer import build_localizer
from cnnpipe.models.transfer import (
    GrayToRGB,
    build_pyramid_model,
    build_transfer_model,
    classifier_features,
    classifier_window,
    load_classifier_weights,
    min_pyramid_side,
    mobilenet_v2_base,
    unfreeze_top,
)
from cnnpipe.models.unet import build_unet
from cnnpipe.training.outputs import load_model, save_model


def test_backbone_is_fully_convolutional():
    bb = build_backbone((4, 8), convs_per_block=2)
    assert bb(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 14, 14, 8)
    assert bb(np.zeros((1, 64, 64, 1), "float32")).shape == (1, 32, 32, 8)


def test_classifier_shape_and_backbone_reuse():
    clf = build_classifier((28, 28, 1), 10, (4, 8), 2, 0.1)
    probs = clf(np.zeros((2, 28, 28, 1), "float32"))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-5)
    loc = build_localizer(clf.get_layer("backbone"), (64, 64, 1), 10, 0.1)
    out = loc(np.zeros((3, 64, 64, 1), "float32"))
    assert out["class"].shape == (3, 10) and out["box"].shape == (3, 4)
    # The localizer shares (not copies) the classifier's backbone weights.
    assert loc.get_layer("backbone") is clf.get_layer("backbone")


@pytest.mark.parametrize(("n_out", "act_sum"), [(1, None), (11, 1.0)])
def test_unet_shapes(n_out, act_sum):
    unet = build_unet((64, 64, 1), (4, 8, 16), n_out)
    masks = np.asarray(unet(np.random.rand(2, 64, 64, 1).astype("float32")))
    assert masks.shape == (2, 64, 64, n_out)
    assert masks.min() >= 0 and masks.max() <= 1
    if act_sum:
        np.testing.assert_allclose(masks.sum(-1), 1.0, rtol=1e-4)
    # skip connections: every decoder level concatenates an encoder output
    assert sum(isinstance(layer, keras.layers.Concatenate) for layer in unet.layers) == 2
    assert sum(isinstance(layer, keras.layers.Conv2DTranspose) for layer in unet.layers) == 2


def _trained_like_classifier(filters, dense):
    """A classifier with random but non-trivial weights everywhere, BatchNorm statistics included."""
    keras.utils.set_random_seed(3)
    clf = build_classifier((28, 28, 1), 10, filters, 2, 0.0, dense=dense)
    rng = np.random.default_rng(0)
    for layer in clf.layers + clf.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma + rng.random(gamma.shape), beta + rng.standard_normal(beta.shape),
                               rng.standard_normal(mean.shape), 0.5 + rng.random(var.shape)])
    return clf


@pytest.mark.parametrize(("filters", "dense", "window"), [((4, 8, 8), 16, 3), ((4, 8, 8), 0, 1), ((4, 8), 16, 7)])
def test_classifier_features_equal_the_classifier_head_at_28px(filters, dense, window):
    """The convolutional form of the head computes exactly the classifier's hidden layer on a
    28x28 input, and slides it over a larger one."""
    clf = _trained_like_classifier(filters, dense)
    assert classifier_window(clf) == window
    feats = classifier_features(filters, 2, dense, window)
    load_classifier_weights(feats, clf)
    x = np.random.default_rng(1).random((3, 28, 28, 1)).astype("float32")
    got = np.asarray(feats(x, training=False))
    last = "hidden_relu" if dense else "dropout"
    want = np.asarray(keras.Model(clf.input, clf.get_layer(last).output)(x, training=False))
    if dense:
        # e.g. 7x7 map -> stride-1 pool 6x6 -> dilated 3x3: 2x2 offsets; (0, 0) is the classifier's own.
        side = 28 // 2 ** (len(filters) - 1) - 1 - 2 * (window - 1)
        assert got.shape == (3, side, side, dense)
        np.testing.assert_allclose(got[:, 0, 0], want, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(got.mean(axis=(1, 2)), want, rtol=1e-4, atol=1e-4)
    # 64x64: the hidden layer at every 4-pixel offset; the corner window is the 28x28 crop.
    big = np.random.default_rng(2).random((1, 64, 64, 1)).astype("float32")
    out = np.asarray(feats(big, training=False))
    if dense:
        side = 64 // 2 ** (len(filters) - 1) - 1 - 2 * (window - 1)
        assert out.shape == (1, side, side, dense)
        corner = np.asarray(keras.Model(clf.input, clf.get_layer(last).output)(big[:, :28, :28], training=False))
        # Zero padding differs at the crop's inner edges, so only the window's centre is exact:
        # compare against the same network on the crop, loosely.
        assert np.corrcoef(out[0, 0, 0], corner[0])[0, 1] > 0.5


def test_load_classifier_weights_names_a_mismatch():
    clf = build_classifier((28, 28, 1), 10, (4, 8), 2, 0.0, dense=16)
    feats = classifier_features((4, 8, 8), 2, 16, classifier_window(clf))
    with pytest.raises(ModelError, match="has no layer 'block3_1_conv'"):
        load_classifier_weights(feats, clf)


def test_pyramid_model_shapes_and_too_small_scale():
    base = classifier_features((4, 8), 2, 8)
    assert min_pyramid_side((4, 8), 8) == 12
    model = build_pyramid_model(base, (64, 64, 1), 10, 0.1, (1.25, 1.0, 0.5), 12)
    probs = np.asarray(model(np.random.rand(2, 64, 64, 1).astype("float32")))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Resizing)] == ["scale0", "scale2"]
    with pytest.raises(ParamsError, match=r"transfer.scales: 0.1 turns the 64x64 input into 6x6"):
        build_pyramid_model(base, (64, 64, 1), 10, 0.1, (1.0, 0.1), 12)


def test_transfer_unfreeze_top_keeps_batchnorm_frozen():
    base = build_backbone((4, 8), 2)
    base.trainable = False
    unfrozen = unfreeze_top(base, 2)
    assert unfrozen == 2
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert len(trainable) == 2
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)


def test_save_load_round_trip_in_safe_mode(tmp_path):
    clf = build_classifier((28, 28, 1), 10, (4,), 1, 0.0)
    x = np.random.rand(2, 28, 28, 1).astype("float32")
    save_model(clf, tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras", producer="train_classifier")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(clf(x)), atol=1e-6)


def test_custom_objects_keep_their_registered_names():
    """Saved .keras files name custom objects "cnnpipe>Class": renaming one breaks every old model.
    ``cnnpipe.models`` (imported by ``load_model``) registers all of them."""
    from cnnpipe.models import CUSTOM_OBJECTS

    expected = {"AddCoords", "BoxFromCells", "GrayToRGB", "BoxLoss", "DiceCrossentropy", "BoxIoU", "DiceScore"}
    assert set(CUSTOM_OBJECTS) == {f"cnnpipe>{name}" for name in expected}
    registered = {k for k in keras.saving.get_custom_objects() if k.startswith("cnnpipe>")}
    assert registered == set(CUSTOM_OBJECTS)  # nothing registered that CUSTOM_OBJECTS misses


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match="missing; it is written by the 'train_classifier' stage"):
        load_model(tmp_path / "absent.keras", producer="train_classifier")
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(ModelError, match="junk.keras: not a loadable Keras model"):
        load_model(junk, producer="train_classifier")


def test_lambda_layer_refused_in_safe_mode(tmp_path):
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelError, match="not a loadable Keras model"):
        load_model(path, producer="x")


def test_mobilenet_from_local_weights_file(tmp_path):
    # ImageNet weights cannot be downloaded here: save a freshly built base's weights and
    # load them back through the "local weights file" path.
    fresh = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    weights = tmp_path / "mnv2.weights.h5"
    fresh.save_weights(weights)
    base = mobilenet_v2_base(32, str(weights))
    for a, b in zip(base.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model = build_transfer_model(base, (64, 64, 1), 10, 0.1, imagenet_input_size=32)
    assert model(np.zeros((1, 64, 64, 1), "float32")).shape == (1, 10)
    assert any(isinstance(layer, GrayToRGB) for layer in model.layers)


def test_mobilenet_bad_weights_errors(tmp_path):
    with pytest.raises(ModelError, match="neither 'imagenet', null, nor an existing weights file"):
        mobilenet_v2_base(96, str(tmp_path / "missing.h5"))
    with pytest.raises(ModelError, match="ImageNet weights exist for sizes"):
        mobilenet_v2_base(64, "imagenet")


def test_imagenet_download_failure_says_what_to_do(tmp_path, monkeypatch):
    # No test touches the network: a proxy on a closed loopback port makes the download
    # fail at once, and an empty KERAS_HOME guarantees there is no cached file.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(ModelError) as err:
        mobilenet_v2_base(96, "imagenet")
    msg = str(err.value)
    assert "could not download the ImageNet weights" in msg
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in msg
    assert "transfer.weights" in msg


def test_box_from_cells_hand_case():
    from cnnpipe.models.localizer import AddCoords, BoxFromCells

    scores = np.zeros((1, 2, 2, 1), "float32")
    scores[0, 0, 0, 0] = 100.0  # all the weight on the top-left cell, centre (0.25, 0.25)
    distances = np.tile(np.array([0.1, 0.1, 0.2, 0.2], "float32"), (1, 2, 2, 1))
    box, weights = BoxFromCells()(distances, scores)
    np.testing.assert_allclose(np.asarray(box), [[0.15, 0.15, 0.3, 0.3]], atol=1e-5)
    assert float(np.asarray(weights)[0, 0, 0, 0]) == pytest.approx(1.0)
    # equal scores average the per-cell boxes: centres average to (0.5, 0.5)
    box, _ = BoxFromCells()(distances, np.zeros_like(scores))
    np.testing.assert_allclose(np.asarray(box), [[0.4, 0.4, 0.3, 0.3]], atol=1e-5)
    coords = np.asarray(AddCoords()(np.zeros((1, 2, 4, 3), "float32")))
    assert coords.shape == (1, 2, 4, 5)
    np.testing.assert_allclose(coords[0, 0, :, 3], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(coords[0, :, 0, 4], [0.25, 0.75])
