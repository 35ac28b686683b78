"""Seeds and determinism, set in one place for every stage."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("cnnpipe")


def set_global_seed(seed: int, inter_op_threads: int | None = None) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic.

    With the same seed, data and thread settings, two runs give the same weights; with
    ``inter_op_threads=1`` (a training section's ``fit.inter_op_threads``) also when other work
    shares the cores. Call it before any TensorFlow op runs: the inter-op thread count is fixed
    when TF's runtime starts.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if inter_op_threads == 1:
        one_inter_op_thread()


def one_inter_op_thread(warn: bool = True) -> None:
    """Run TensorFlow with one inter-op thread, before its runtime starts.

    With several, the independent ops of a training step run concurrently and the result depends
    on their scheduling (measured: the same U-Net step from the same weights and batch gave
    different weights run to run, float32 or bfloat16, oneDNN on or off; the transfer scratch
    model drifted when other work shared the cores). Each op still uses every core (intra-op
    threads), so this costs little on a CPU. ``python -m stages`` calls it first, as TF starts
    before its training stages seed.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already started: its thread count stays
        if warn:
            log.warning("TensorFlow started before the seed was set: training may not be bit-reproducible")
