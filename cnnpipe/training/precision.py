"""``fit.precision``: the Keras dtype policy models are built under (float32 or mixed bfloat16)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import keras


def cpu_has_native_bf16() -> bool:
    """True where the CPU advertises bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``mixed_bfloat16`` on CPUs with native bfloat16, else ``float32``."""
    if precision == "auto":
        return "mixed_bfloat16" if cpu_has_native_bf16() else "float32"
    return precision


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Build models under a Keras dtype policy; the layers keep it, the global is restored.

    Output layers are built with ``dtype="float32"``, so losses and predictions stay float32.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolve_precision(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
