"""Every use of Keras private API in cnnpipe, in one place, for the Keras it was written for.

Package-private: only modules of ``cnnpipe.training`` import it (``fit`` and ``distribute``).
Both pieces work around keras-team/keras#20585 (``model.fit`` fails under
MultiWorkerMirroredStrategy in Keras 3.x) and touch ``keras.src`` internals, so each call first
checks that the installed Keras is the series they were written and tested against
(:data:`WRITTEN_FOR`) and otherwise stops with a one-line error saying what to re-check.
``tests/test_distribute.py`` fails as soon as another Keras is installed. No public Keras API
does this yet; delete a piece once the upstream fix lands.

Keras is imported inside the functions: ``distribute`` (and the stage shell) stay cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnpipe.errors import CnnpipeError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

WRITTEN_FOR = "3.15."  # the Keras release series whose internals this module patches


class UnsupportedKeras(CnnpipeError):
    """The installed Keras is not the series the private-API workarounds were written for."""


def check_keras_version(version: str | None = None) -> None:
    """Raise :class:`UnsupportedKeras` unless ``version`` (default: the installed Keras) is in
    the :data:`WRITTEN_FOR` series."""
    if version is None:
        import keras

        version = keras.__version__
    if not version.startswith(WRITTEN_FOR):
        raise UnsupportedKeras(
            f"keras {version} is installed, but cnnpipe/training/_keras_compat.py patches Keras private "
            f"API written for keras {WRITTEN_FOR}x (distributed training, keras-team/keras#20585); install "
            f"the keras pinned in requirements.lock, or re-check both workarounds against keras {version} "
            "and update WRITTEN_FOR"
        )


def build_for_distribution(model: keras.Model, train: tf.data.Dataset) -> None:
    """Build the compiled loss, metrics and optimizer from the dataset's element spec, in the
    strategy's scope, then let ``fit`` take the strategy from that scope.

    Keras 3.x otherwise reduces the first distributed batch to build them, which fails under
    MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)",
    keras-team/keras#20585). Building from symbolic inputs is what Keras itself does; with
    the model's own strategy reference cleared, ``fit`` (called inside ``strategy.scope()``)
    skips that step and still trains on the strategy of the enclosing scope.
    """
    check_keras_version()
    import keras
    import tensorflow as tf

    spec = tf.nest.map_structure(lambda s: keras.KerasTensor(s.shape, s.dtype.name), train.element_spec)
    model._symbolic_build(data_batch=spec)
    model._distribute_strategy = None


def patch_multi_worker_logs() -> None:
    """Make Keras 3 average scalar step logs (loss, metrics) over the workers correctly.

    Keras 3.x (TF backend) reduces each log across workers with ``strategy.reduce("MEAN", v,
    axis=0)``, which fails on scalars ("Invalid reduction dimension 0 for input with 0
    dimensions"; keras-team/keras#20585: model.fit does not run under
    MultiWorkerMirroredStrategy). The fix reduces scalars with ``axis=None`` (the mean over
    replicas) and leaves every other case to Keras. Installed only by ``multi_worker``.
    """
    check_keras_version()
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "_cnnpipe_patched", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def mean(v: Any) -> Any:
            rank = strategy.experimental_local_results(v)[0].shape.rank
            return strategy.reduce("MEAN", v, axis=0 if rank else None)

        return tree.map_structure(mean, values)

    reduce_per_replica._cnnpipe_patched = True  # type: ignore[attr-defined]
    trainer.reduce_per_replica = reduce_per_replica
