"""Export to TFLite: float32 copies of mixed-precision models, parity against Keras, the backend
choice with its cache, and prediction through the export (tiny models, a few steps)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cnnpipe.data.images import open_image
from cnnpipe.serving import backends, export, predict
from cnnpipe.training.precision import precision_policy


def tiny_classifier(precision: str = "float32"):
    import keras

    with precision_policy(precision):
        inputs = keras.Input((12, 12, 1), name="image")
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3, activation="softmax", dtype="float32", name="probs")(x)
        return keras.Model(inputs, outputs)


def tiny_localizer():
    import keras

    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs))
    return keras.Model(inputs, {"class": keras.layers.Dense(3, activation="softmax", name="class")(x),
                                "box": keras.layers.Dense(4, activation="sigmoid", name="box")(x)})


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((20, 12, 12, 1), dtype=np.float32)


def test_float32_model_keeps_the_weights_and_drops_bfloat16(images):
    model = tiny_classifier("mixed_bfloat16")
    fp32 = export.float32_model(model)
    assert {layer.dtype_policy.name for layer in fp32.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), fp32.get_weights(), strict=True))
    # bfloat16 rounding is the only difference: probabilities agree to a few hundredths.
    assert np.max(np.abs(np.asarray(model(images)) - np.asarray(fp32(images)))) < 0.05
    plain = tiny_classifier()
    assert export.float32_model(plain) is plain


def test_tflite_export_matches_keras_for_single_and_batched_inputs(images):
    model = tiny_classifier("mixed_bfloat16")
    tflite = export.TFLitePredictor(export.to_tflite(model), model.input_shape)
    reference = export.KerasPredictor(export.float32_model(model))
    for batch in (images[:1], images):
        parity = export.compare(reference(batch), tflite(batch), "tflite")
        assert parity.passed and parity.max_abs_diff <= export.PARITY_ATOL and parity.argmax_agreement == 1.0
    batched = export.predict_batched(tflite, images, batch_size=8)  # 8 + 8 + 4 (padded)
    assert batched.shape == (20, 3)
    assert np.allclose(batched, reference(images), atol=export.PARITY_ATOL)


def test_multi_output_models_export_with_their_output_names():
    model = tiny_localizer()
    x = np.random.default_rng(1).random((5, 16, 16, 1), dtype=np.float32)
    out = export.TFLitePredictor(export.to_tflite(model), model.input_shape)(x)
    assert set(out) == {"class", "box"} and out["box"].shape == (5, 4)
    assert export.compare(export.KerasPredictor(model)(x), out, "tflite").passed


def test_compare_fails_a_mismatch_and_accepts_argmax_agreement():
    ref = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert not export.compare(ref, ref[:, ::-1], "x").passed
    nudged = export.compare(ref, ref + [[0.01, -0.01], [0.0, 0.0]], "x")
    assert nudged.passed and nudged.max_abs_diff == pytest.approx(0.01) and nudged.argmax_agreement == 1.0
    box = {"class": ref, "box": np.zeros((2, 4))}
    assert not export.compare(box, {"class": ref, "box": np.full((2, 4), 0.01)}, "x").passed
    assert not export.compare(ref, {"other": ref}, "x").passed


def test_choose_predictor_prefers_tflite_caches_it_and_falls_back_to_keras(images, tmp_path, monkeypatch):
    model = tiny_classifier()
    predictor, checks = backends.choose_predictor(model, images, cache=tmp_path)
    assert predictor.backend == "tflite" and checks[0].passed
    (cached,) = tmp_path.glob("*.tflite")
    assert cached.name == f"{backends.model_digest(model)}.tflite"

    def broken(model, cache=None):
        raise RuntimeError("converter unavailable")

    monkeypatch.setattr(backends, "tflite_predictor", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed conversion is a reason, not a warning to the user
        predictor, checks = backends.choose_predictor(model, images, cache=tmp_path)
    assert predictor.backend == "keras" and not checks[0].passed
    assert checks[0].reason() == "tflite could not run this model (RuntimeError: converter unavailable)"
    predictor, checks = backends.choose_predictor(model, images, backends=("keras",))
    assert predictor.backend == "keras" and checks == []


def test_predict_through_the_export_gives_the_keras_answer(images, tmp_path):
    from PIL import Image

    model = tiny_classifier()
    path = tmp_path / "item.png"
    Image.fromarray((images[3, :, :, 0] * 255).astype(np.uint8)).resize((30, 20)).save(path)
    image = open_image(path)
    inputs = [predict.model_input(image, model.input_shape[1:], path)]
    predictor = predict.choose_backend(model, inputs, "auto")
    assert predictor.backend == "tflite"
    names = ["a", "b", "c"]
    assert str(predict.predict_image(predictor, "class", names, path, image)) == str(
        predict.predict_image(model, "class", names, path, image))
    assert predict.choose_backend(model, inputs, "keras").backend == "keras"


def test_an_unconvertible_model_names_the_op_is_tried_once_and_predicts_through_keras(images, tmp_path, monkeypatch):
    """The transfer pyramid downscales with antialiasing (ScaleAndTranslate), which TFLite has
    no kernel for: a short error naming it, remembered in the cache, and Keras serves."""
    import keras

    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Resizing(8, 8, antialias=True)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3)(x))
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    with pytest.raises(export.ExportError, match=r"ops with no TFLite kernel: ScaleAndTranslate\)$"):
        backends.tflite_predictor(model, cache=tmp_path)
    assert (tmp_path / f"{backends.model_digest(model)}.failed").is_file()

    def must_not_convert(model):
        raise AssertionError("converted again despite the cached failure")

    monkeypatch.setattr(export, "to_tflite", must_not_convert)
    predictor, checks = backends.choose_predictor(model, images, cache=tmp_path)
    assert predictor.backend == "keras" and not checks[0].passed
    assert checks[0].reason() == "TFLite cannot convert this model (ops with no TFLite kernel: ScaleAndTranslate)"
    np.testing.assert_allclose(predictor(images), model(images).numpy(), atol=1e-6)


def test_predict_names_the_backend_and_why_and_a_forced_tflite_that_cannot_serve_fails(images, tmp_path, monkeypatch, caplog):
    """One line says which backend predicts and why; a failed conversion is named as such (never
    a failed parity check, never a warning); ``--backend tflite`` that cannot serve is an error."""
    import keras

    from cnnpipe.errors import ModelError

    monkeypatch.setenv("CNNPIPE_CACHE_DIR", str(tmp_path))
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Resizing(8, 8, antialias=True)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3)(x))
    unconvertible = keras.Model(inputs, keras.layers.Softmax()(x))
    probe = [images[:1, :12, :12]]
    with caplog.at_level("INFO", logger="cnnpipe"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predict.choose_backend(unconvertible, probe, "auto").backend == "keras"
    # Only the backend's line (other modules' records from earlier tests may share the logger).
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predicting with")]
    assert line == ("predicting with keras (tflite: TFLite cannot convert this model "
                    "(ops with no TFLite kernel: ScaleAndTranslate))")
    assert "parity" not in line and "FAILED" not in line
    with pytest.raises(ModelError) as raised:
        predict.choose_backend(unconvertible, probe, "tflite")
    assert str(raised.value).startswith("--backend tflite: tflite cannot serve this model (tflite: TFLite cannot "
                                        "convert this model (ops with no TFLite kernel: ScaleAndTranslate))")
    assert "\n" not in str(raised.value)

    caplog.clear()
    with caplog.at_level("INFO", logger="cnnpipe"):
        assert predict.choose_backend(tiny_classifier(), [images[:1]], "auto").backend == "tflite"
        assert predict.choose_backend(tiny_classifier(), [images[:1]], "keras").backend == "keras"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predicting with")]
    assert lines[0].startswith("predicting with tflite (tflite: its outputs match Keras on 9 inputs (max |diff| ")
    assert lines[1] == "predicting with keras (--backend keras)" and len(lines) == 2
