"""Keras at the MLflow edge: log a trained model (a custom pyfunc, signature, uint8 input example)
and a callback logging each epoch's metrics, so model code never sees MLflow.

Importing this module imports Keras (seconds): only stages that train or log models do.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from cnnpipe.tracking.connection import Connection
from cnnpipe.tracking.runs import StageRun, activated, numeric_metrics

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs each epoch's ``logs`` (loss, metrics, val_*) to an MLflow run, step = epoch.

    Kept over ``mlflow.keras.MlflowCallback``, which also logs ``optimizer_*`` params per fit (a
    second fit in one run with another rate is refused) and step-0 ``validation_*`` duplicates.
    """

    def __init__(self, run_id: str, connection: Connection) -> None:
        super().__init__()
        self.run_id = run_id
        self._client = connection.client()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for k, v in numeric_metrics(dict(logs or {})).items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)


def epoch_logger(run: StageRun) -> MlflowEpochLogger:
    """A Keras callback logging every epoch's metrics to the stage's run."""
    return MlflowEpochLogger(run.run_id, run.connection)


def log_pyfunc_model(
    run: StageRun,
    name: str,
    files: Mapping[str, Any],
    *,
    input_example: np.ndarray,
    output_example: Any,
    metadata: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Log a custom pyfunc model to ``run``: ``files`` holds its ``python_model`` (a code file),
    ``artifacts`` and ``code_paths``; the signature's input is any batch of uint8 images
    (``N x H x W x C``, any size: the model resizes), its output inferred from ``output_example``."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "integer columns cannot hold missing values": box pixels never miss
        outputs = infer_signature(input_example, output_example).outputs
    signature = ModelSignature(Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))]), outputs)
    with activated(run.run_id):
        return mlflow.pyfunc.log_model(
            name=name, python_model=files["python_model"], artifacts=dict(files["artifacts"]),
            code_paths=list(files["code_paths"]), signature=signature, input_example=input_example,
            metadata=dict(metadata or {}), pip_requirements=_pinned_requirements(),
        )


@functools.cache
def _pinned_requirements() -> list[str]:
    """The exact versions in this environment: MLflow would otherwise infer them by loading the
    model in a subprocess (tens of seconds with TensorFlow)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "keras", "tensorflow-cpu", "tensorflow", "numpy", "pillow"):  # pillow: the decoder
        with contextlib.suppress(PackageNotFoundError):
            reqs.append(f"{dist}=={version(dist)}")
    return reqs
