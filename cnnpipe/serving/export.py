"""Export a trained Keras model to TFLite and check it against Keras: the two predictors
(Keras, TFLite) and the parity rule between them.

Training runs in mixed bfloat16 where the CPU has it; the export is of the same weights in
float32 (TFLite has no bfloat16 kernels for these ops), and parity is checked against that
float32 Keras model. :mod:`cnnpipe.serving.backends` picks the backend and caches exports.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from cnnpipe.data.masks import decide_mask

# Parity: the exported model agrees with Keras if, for every output, the largest absolute
# difference is within this, or (for probability outputs) every argmax agrees.
PARITY_ATOL = 1e-4
# Regression outputs (box fractions) have no argmax; they must agree within this.
REGRESSION_ATOL = 1e-3

Outputs = np.ndarray | dict[str, np.ndarray]
# How the converter names an op it has no kernel for (e.g. antialiased resize, ScaleAndTranslate).
_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


class ExportError(RuntimeError):
    """The model cannot be converted; the message names the ops TFLite lacks (``ops``)."""

    def __init__(self, message: str, ops: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.ops = ops


class Predictor(Protocol):
    """A model behind one call: float32 NHWC batch in, numpy probabilities (or a dict) out."""

    backend: str
    input_shape: tuple[int | None, ...]

    def __call__(self, x: np.ndarray) -> Outputs: ...


# --------------------------------------------------------------------------------------
# float32 copy of a (possibly mixed-precision) model
# --------------------------------------------------------------------------------------


def _float32_config(config: Any) -> Any:
    """The serialized config with every layer's dtype policy set to float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            out = dict(config)
            out["config"] = {**config["config"], "name": "float32"}
            return out
        return {k: _float32_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def float32_model(model: Any) -> Any:
    """The same architecture and weights computing in float32 (``model`` itself if it already does)."""
    import keras

    from cnnpipe.models import (
        CUSTOM_OBJECTS,  # the custom layers, so the config deserializes
    )

    serialized = keras.saving.serialize_keras_object(model)
    converted = _float32_config(copy.deepcopy(serialized))
    if converted == serialized:
        return model
    clone = keras.saving.deserialize_keras_object(converted, custom_objects=CUSTOM_OBJECTS)
    clone.set_weights(model.get_weights())
    return clone


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


def _numpy(out: Any) -> Outputs:
    if isinstance(out, Mapping):
        return {k: np.asarray(v) for k, v in out.items()}
    return np.asarray(out)


class KerasPredictor:
    """``model(x, training=False)``: for small batches several times faster than ``model.predict``."""

    backend = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.input_shape = tuple(model.input_shape)

    def __call__(self, x: np.ndarray) -> Outputs:
        return _numpy(self.model(x, training=False))


def to_tflite(model: Any) -> bytes:
    """Convert ``model`` (in float32) to a TFLite flatbuffer; its one signature takes the
    model's input and returns its outputs by name."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(float32_model(model))
    # The converter exports a SavedModel first and prints its signature: keep stdout clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return converter.convert()
        except Exception as err:  # noqa: BLE001 - the converter's errors are pages of MLIR: keep what matters
            ops = tuple(sorted(set(_UNSUPPORTED_OP.findall(str(err)))))
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            what = f"ops with no TFLite kernel: {', '.join(ops)}" if ops else f"{type(err).__name__}: {first_line}"
            raise ExportError(f"TFLite cannot convert this model ({what})", ops) from None


class TFLitePredictor:
    """A TFLite flatbuffer run by the TF Lite interpreter (XNNPACK delegate) on all CPU cores.

    One interpreter per batch size: resizing the input re-plans every tensor, so a loop of
    single images must not alternate with full batches on the same interpreter.
    """

    backend = "tflite"

    def __init__(self, content: bytes, input_shape: tuple[int | None, ...], threads: int | None = None) -> None:
        self.content = content
        self.input_shape = tuple(input_shape)
        self.threads = threads or os.cpu_count() or 1
        self._runners: dict[int, Any] = {}

    def _runner(self, batch: int) -> tuple[Any, str, list[str]]:
        if batch not in self._runners:
            import tensorflow as tf

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
                interpreter = tf.lite.Interpreter(model_content=self.content, num_threads=self.threads)
            (key, signature), = interpreter.get_signature_list().items()
            runner = interpreter.get_signature_runner(key)
            (name,) = signature["inputs"]
            runner(**{name: np.zeros((batch, *self.input_shape[1:]), np.float32)})  # plan the tensors once
            self._runners[batch] = (runner, name, list(signature["outputs"]))
        return self._runners[batch]

    def __call__(self, x: np.ndarray) -> Outputs:
        runner, name, outputs = self._runner(len(x))
        out = runner(**{name: np.ascontiguousarray(x, dtype=np.float32)})
        if len(outputs) == 1:
            return np.array(out[outputs[0]])
        return {k: np.array(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parity:
    """How far a candidate backend's outputs are from the Keras float32 reference."""

    backend: str
    n: int
    max_abs_diff: float
    argmax_agreement: float | None  # share of (example, pixel) argmaxes that agree; None: regression only
    passed: bool
    error: str | None = None  # why the backend could not run at all (e.g. the conversion failed)

    def reason(self) -> str:
        """Why this backend serves, or does not, in a few words."""
        if self.error is not None:
            return self.error
        verdict = "match" if self.passed else "differ from"
        return f"its outputs {verdict} Keras on {self.n} inputs (max |diff| {self.max_abs_diff:.2g})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(reference: Outputs, candidate: Outputs, backend: str, regression: tuple[str, ...] = ("box",)) -> Parity:
    """Parity of ``candidate`` against ``reference`` (same structure).

    Probability outputs pass with max |diff| <= PARITY_ATOL or 100% argmax agreement;
    outputs named in ``regression`` must agree within REGRESSION_ATOL.
    """
    ref = reference if isinstance(reference, Mapping) else {"output": reference}
    cand = candidate if isinstance(candidate, Mapping) else {"output": candidate}
    if set(ref) != set(cand):
        return Parity(backend, 0, float("inf"), None, False)
    worst, agreement, passed, n = 0.0, None, True, 0
    for name, r in ref.items():
        c = np.asarray(cand[name], dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if r.shape != c.shape:
            return Parity(backend, len(r), float("inf"), None, False)
        n = len(r)
        diff = float(np.max(np.abs(r - c))) if r.size else 0.0
        worst = max(worst, diff)
        if name in regression:
            passed &= diff <= REGRESSION_ATOL
            continue
        agree = float(np.mean(decide_mask(r) == decide_mask(c)))  # classes: the same rule
        agreement = agree if agreement is None else min(agreement, agree)
        passed &= diff <= PARITY_ATOL or agree == 1.0
    return Parity(backend, n, worst, agreement, bool(passed))


def predict_batched(predictor: Any, x: np.ndarray, batch_size: int = 256) -> Outputs:
    """Run ``predictor`` over ``x`` in fixed-size batches (the last one padded) and concatenate."""
    parts: list[Outputs] = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        n = len(chunk)
        if n < batch_size and len(x) > batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)])
        out = predictor(chunk)
        parts.append({k: v[:n] for k, v in out.items()} if isinstance(out, Mapping) else out[:n])
    if isinstance(parts[0], Mapping):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)
