"""Scenes as shards: composed, written and read a shard at a time, for data bigger than memory.

With ``prepare.shard_size: N`` (N > 0) the prepare stage writes each scenes split as files of
at most N scenes, ``<split>_<field>-00000.npy`` ..., and lists their sizes in ``meta.json``
(``"shards": {split: [n0, n1, ...]}``). Each shard is composed from its own child random
stream, so it can be generated and written without the others in memory. Training streams
the shards through tf.data (:func:`cnnpipe.data.pipeline.split_dataset`), holding a few
shards at a time, so peak memory does not grow with the number of scenes.

``shard_size: 0`` (the default) keeps the single-array layout of :mod:`cnnpipe.data.prepared`
byte for byte; :class:`cnnpipe.data.prepared.PreparedSet` reads both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnpipe.config import ScenesParams
from cnnpipe.data.prepared import FIELDS, SPLITS, shard_file
from cnnpipe.data.scenes.compose import make_scenes, split_counts
from cnnpipe.io import save_array

if TYPE_CHECKING:
    import pandas as pd


def shard_sizes(n: int, shard_size: int) -> list[int]:
    """``n`` scenes cut into shards of ``shard_size`` (the last one may be smaller)."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size!r}")
    return [min(shard_size, n - start) for start in range(0, n, shard_size)]


def iter_scene_shards(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    params: ScenesParams,
    seed: int,
    split: str,
    shard_size: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Compose the ``n`` scenes of ``split`` one shard at a time (same arrays as make_scenes).

    Shard ``k`` draws from its own child of ``SeedSequence(seed)``'s stream for ``split``,
    so it depends only on ``(seed, split, k, shard_size)`` and the items, never on the other
    shards: nothing but the current shard is ever in memory.
    """
    split_seq = np.random.SeedSequence(seed).spawn(len(SPLITS))[SPLITS.index(split)]
    sizes = shard_sizes(n, shard_size)
    for size, child in zip(sizes, split_seq.spawn(len(sizes)), strict=True):
        yield make_scenes(images, labels, size, params, np.random.default_rng(child))


def write_scene_shards(
    directory: Path,
    items_images: Mapping[str, np.ndarray],
    items_labels: Mapping[str, np.ndarray],
    params: ScenesParams,
    seed: int,
    shard_size: int,
    on_shard: Callable[[str, dict[str, np.ndarray]], None] = lambda split, shard: None,
) -> dict[str, list[int]]:
    """Compose every split's scenes shard by shard into ``directory``; returns the shard sizes.

    ``on_shard(split, arrays)`` sees each shard once before it is dropped (e.g. to build the
    validation manifest). ``directory`` should be a temp dir from :func:`cnnpipe.io.atomic_dir`.
    """
    counts = split_counts(params)
    shards: dict[str, list[int]] = {}
    for split in SPLITS:
        shards[split] = []
        stream = iter_scene_shards(
            items_images[split], items_labels[split], counts[split], params, seed, split, shard_size
        )
        for index, arrays in enumerate(stream):
            on_shard(split, arrays)
            for field in FIELDS:
                save_array(shard_file(directory, split, field, index), arrays[field])
            shards[split].append(int(len(arrays["labels"])))
    return shards


def sharded_scenes_manifest(frames: list) -> "pd.DataFrame":
    """Join per-shard manifests (:func:`cnnpipe.data.validation.manifest.scenes_manifest` of one shard
    each) into the manifest of the whole set: indices run on across a split's shards and
    leakage is marked across all of them. Rows, not pixels: ~0.4 KB per scene."""
    import pandas as pd

    from cnnpipe.data.validation.manifest import SCENES_COLUMNS, mark_leakage

    df = pd.concat(frames, ignore_index=True)
    df["index"] = df.groupby("split").cumcount().astype(np.int64)
    return mark_leakage(df)[list(SCENES_COLUMNS)]
