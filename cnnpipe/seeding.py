"""Seeds and determinism, set in one place for every stage."""

from __future__ import annotations

import os


def set_global_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic.

    With the same seed, data and thread settings, two runs give the same weights.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
