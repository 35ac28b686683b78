"""``train.strategy``: where training runs, through tf.distribute (Keras 3 on TensorFlow).

- ``default``: one device, no distribution (every default run).
- ``mirrored``: synchronous data parallelism over this machine's GPUs (MirroredStrategy).
- ``multi_worker``: synchronous data parallelism over several processes or hosts named in the
  ``TF_CONFIG`` environment variable (MultiWorkerMirroredStrategy). Every worker runs the same
  stage; only the chief writes outputs (:func:`is_chief`), as TensorFlow's guide prescribes.

Models are built under :func:`get_strategy` ``(...).scope()``; Keras then compiles and fits them
on that strategy, and the tf.data pipelines are split across replicas (``fit.batch_size`` is
the global batch).

The Keras private-API workaround ``multi_worker`` needs lives in ``_keras_compat`` (a module
private to ``cnnpipe.training``), behind a check of the installed Keras version.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from cnnpipe.config import STRATEGIES, ParamsError
from cnnpipe.training._keras_compat import patch_multi_worker_logs

# The stages that train under train.strategy. transfer keeps the default strategy: its three
# fits on a few hundred labelled scenes take about a minute on one CPU.


_MULTI_WORKER = False  # set once this process has created the multi-worker strategy


def _tf_config() -> dict[str, Any] | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        config["cluster"], config["task"]["type"], config["task"]["index"]  # a shape check
    except (ValueError, KeyError, TypeError) as err:
        raise ParamsError(
            f"TF_CONFIG: not a valid cluster spec ({type(err).__name__}: {err}); expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    return config


def is_chief() -> bool:
    """False only in a non-chief worker of a multi-worker run (see :func:`task_is_chief`).

    Only a process that created the ``multi_worker`` strategy consults ``TF_CONFIG``: a
    ``TF_CONFIG`` left in the environment of a default run must not stop its outputs.
    """
    return not _MULTI_WORKER or task_is_chief(_tf_config())


def task_is_chief(config: dict[str, Any] | None) -> bool:
    """Whether the task a ``TF_CONFIG`` describes is the chief: the task of type ``chief``,
    or worker 0 when the cluster has no chief (True without a config)."""
    if config is None:
        return True
    task_type, index = config["task"]["type"], int(config["task"]["index"])
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in config["cluster"]


@functools.cache
def get_strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy for ``train.strategy``; one instance per process.

    A multi-worker strategy must exist before TensorFlow runs any op in the process (it
    configures the collective ops), so call this before building data pipelines.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ParamsError(f"train.strategy: unsupported value {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    config = _tf_config()
    if config is None:
        raise ParamsError(
            "train.strategy 'multi_worker' needs the TF_CONFIG environment variable naming the "
            "cluster and this worker's task; see docs/scale.md"
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    patch_multi_worker_logs()
    global _MULTI_WORKER
    _MULTI_WORKER = True
    return strategy
