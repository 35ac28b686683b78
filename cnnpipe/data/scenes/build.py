"""The scenes set of the prepare stage: composed from the split items (in memory, or shard by
shard into a staging directory with ``prepare.shard_size > 0``), its manifest, and the write.

The stage validates :attr:`Scenes.manifest` between :func:`compose_scenes` and
:func:`write_scenes`, so data that fails its suite is never written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cnnpipe.config import ScenesParams
from cnnpipe.data.prepared import SPLITS, write_arrays
from cnnpipe.data.scenes.compose import build_scene_splits
from cnnpipe.data.scenes.shards import sharded_scenes_manifest, write_scene_shards
from cnnpipe.data.splits import ItemSplits
from cnnpipe.data.validation.manifest import scenes_manifest
from cnnpipe.io import atomic_dir, write_json


@dataclass(frozen=True)
class Scenes:
    """A composed scenes set: ``arrays`` in memory, or shards of ``shard_size`` in ``staging``."""

    manifest: pd.DataFrame
    counts: dict[str, int]
    arrays: dict[str, dict[str, np.ndarray]] | None = None
    staging: Path | None = None
    shard_size: int = 0
    shards: dict[str, list[int]] | None = None  # split -> shard sizes


@contextmanager
def compose_scenes(
    items: ItemSplits, params: ScenesParams, seed: int, shard_size: int, near: Path
) -> Iterator[Scenes]:
    """Compose every split's scenes; shards are staged in a temp dir under ``near`` (on the same
    file system as the output, so :func:`write_scenes` moves them) that goes away on exit."""
    if not shard_size:
        scenes = build_scene_splits(items.images, items.labels, params, seed)
        counts = {split: int(len(scenes[split]["labels"])) for split in SPLITS}
        yield Scenes(scenes_manifest(scenes), counts, arrays=scenes)
        return
    near.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scenes.shards-", dir=near) as staging:
        frames: list[pd.DataFrame] = []
        shards = write_scene_shards(
            Path(staging), items.images, items.labels, params, seed, shard_size,
            on_shard=lambda split, arrays: frames.append(scenes_manifest({split: arrays})),
        )
        counts = {split: sum(shards[split]) for split in SPLITS}
        yield Scenes(sharded_scenes_manifest(frames), counts, staging=Path(staging), shard_size=shard_size,
                     shards=shards)


def write_scenes(out_dir: Path, scenes: Scenes, meta: dict[str, Any]) -> None:
    """Replace ``out_dir`` atomically with the scenes and ``meta.json`` (plus the shard sizes)."""
    with atomic_dir(out_dir) as tmp:
        if scenes.arrays is not None:
            write_arrays(tmp, {split: scenes.arrays[split] for split in SPLITS})
        if scenes.staging is not None:
            for path in scenes.staging.iterdir():
                os.replace(path, tmp / path.name)
            meta = {**meta, "shard_size": scenes.shard_size, "shards": scenes.shards}
        write_json(tmp / "meta.json", meta)
