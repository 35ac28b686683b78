"""Choose the backend that serves a model: its TFLite export when that matches Keras on a
probe (parity), else Keras; exports are cached on disk by a hash of the model.

Backends are tried fastest first (``BACKENDS``, ordered by the inference benchmark in
``benchmarks/``): TFLite through its XNNPACK CPU delegate, then Keras.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.errors import OutputError
from cnnpipe.io import atomic_file
from cnnpipe.serving import export
from cnnpipe.serving.export import KerasPredictor, Parity, Predictor, TFLitePredictor

# Fastest first. On this project's 2-core CPU, TFLite's single-image latency for the
# classifier is about a tenth of Keras's `model(x)` (see README, Performance).
BACKENDS = ("tflite", "keras")


def model_digest(model: Any) -> str:
    """A hash of the architecture and weights: the cache key of the model's export."""
    import keras

    h = hashlib.sha256(json.dumps(keras.saving.serialize_keras_object(model), sort_keys=True, default=str).encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    """Where exports are cached: ``$CNNPIPE_CACHE_DIR`` or ``$XDG_CACHE_HOME/cnnpipe/exports``."""
    if os.environ.get("CNNPIPE_CACHE_DIR"):
        return Path(os.environ["CNNPIPE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnnpipe" / "exports"


def tflite_predictor(model: Any, cache: Path | None = None) -> TFLitePredictor:
    """The model's TFLite export, converted once and cached by :func:`model_digest`; a model
    whose ops TFLite lacks is remembered too (``<digest>.failed``), so it is tried once; any
    other conversion failure may be passing and is not remembered."""
    path = None if cache is None else cache / f"{model_digest(model)}.tflite"
    failed = None if path is None else path.with_suffix(".failed")
    if path is not None and path.is_file():
        content = path.read_bytes()
    elif failed is not None and failed.is_file():
        raise export.ExportError(failed.read_text())
    else:
        try:
            content = export.to_tflite(model)
        except export.ExportError as err:
            if err.ops:
                _cache(failed, str(err).encode())
            raise
        _cache(path, content)
    return TFLitePredictor(content, tuple(model.input_shape))


def _cache(path: Path | None, content: bytes) -> None:
    if path is not None:
        try:
            with atomic_file(path) as f:
                f.write(content)
        except (OSError, OutputError):
            pass  # an unwritable cache only costs the next call a conversion


def choose_predictor(
    model: Any, probe: np.ndarray, backends: tuple[str, ...] = BACKENDS, cache: Path | None = None
) -> tuple[Predictor, list[Parity]]:
    """The first of ``backends`` whose outputs on ``probe`` match Keras in float32 (parity);
    Keras itself when none does. Also returns each backend's parity check (a backend that could
    not run at all has its ``error``)."""
    reference = KerasPredictor(export.float32_model(model))
    expected = reference(probe)
    checks: list[Parity] = []
    for backend in backends:
        if backend == "keras":
            break
        if backend != "tflite":
            raise ValueError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
        try:
            candidate = tflite_predictor(model, cache)
            parity = export.compare(expected, candidate(probe), backend)
        except export.ExportError as err:  # "not this backend", never a failed predict nor a failed parity
            parity = Parity(backend, len(probe), float("inf"), None, False, error=str(err))
        except Exception as err:  # noqa: BLE001 - the converter or interpreter failing in any other way
            parity = Parity(backend, len(probe), float("inf"), None, False,
                            error=f"{backend} could not run this model ({type(err).__name__}: {err})")
        checks.append(parity)
        if parity.passed:
            return candidate, checks
    return KerasPredictor(model), checks
