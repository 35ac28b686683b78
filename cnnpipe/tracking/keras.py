"""Keras at the MLflow edge: log a trained model (mlflow.keras flavor, signature, input example)
and a callback logging each epoch's metrics, so model code never sees MLflow.

Importing this module imports Keras (seconds): only stages that train or log models do.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import types
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


def log_keras_model(
    run: StageRun,
    model: keras.Model,
    name: str,
    input_example: np.ndarray,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Log ``model`` to ``run`` with the mlflow.keras flavor, a signature inferred from
    ``input_example`` (and the model's own output on it: an array, or a dict of arrays for
    multi-head models)."""
    from mlflow.models import Model, infer_signature

    output = model.predict(input_example, verbose=0)
    output = {k: np.asarray(v) for k, v in output.items()} if isinstance(output, Mapping) else np.asarray(output)
    with activated(run.run_id):
        # Model.log is what mlflow.keras.log_model calls, with the flavor made safe (below).
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=_KERAS_FLAVOR,
            model=model,
            signature=infer_signature(input_example, output),
            input_example=input_example,
            metadata=dict(metadata or {}),
            pip_requirements=_pinned_requirements(),
        )


def _save_keras_model(path: str, **kwargs: Any) -> None:
    """mlflow.keras.save_model, after creating ``path``: the flavor writes the input example
    before making its directory, so log_model with an input example fails (mlflow#16183)."""
    import mlflow.keras

    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# The flavor as Model.log sees it: its name and save_model.
_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


@functools.cache
def _pinned_requirements() -> list[str]:
    """The exact versions in this environment: MLflow would otherwise infer them by loading the
    model in a subprocess (tens of seconds with TensorFlow)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "keras", "tensorflow-cpu", "tensorflow", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            reqs.append(f"{dist}=={version(dist)}")
    return reqs
