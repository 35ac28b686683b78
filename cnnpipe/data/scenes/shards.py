"""Scenes as shards: composed, written and read a shard at a time, for data bigger than memory.

With ``prepare.shard_size: N`` (N > 0) the prepare stage writes each scenes split as files of
at most N scenes, ``<split>_<field>-00000.npy`` ..., and lists their sizes in ``meta.json``
(``"shards": {split: [n0, n1, ...]}``). Each shard is composed from its own child random
stream, so it can be generated and written without the others in memory. Training streams
the shards through tf.data (:func:`cnnpipe.data.pipeline.split_dataset`), holding a few
shards at a time, so peak memory does not grow with the number of scenes.

``shard_size: 0`` (the default) keeps the single-array layout of :mod:`cnnpipe.data.arrays`
byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.config import ScenesParams
from cnnpipe.data.prepared import Split
from cnnpipe.data.scenes.compose import SCENE_SPLITS, make_scenes
from cnnpipe.errors import DataError
from cnnpipe.io import load_array, read_json, save_array

FIELDS = ("images", "labels", "boxes", "masks")


def shard_file(directory: Path, split: str, field: str, index: int) -> Path:
    return directory / f"{split}_{field}-{index:05d}.npy"


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
    split_seq = np.random.SeedSequence(seed).spawn(len(SCENE_SPLITS))[SCENE_SPLITS.index(split)]
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
    counts = {"train": params.n_train, "val": params.n_val, "test": params.n_test}
    shards: dict[str, list[int]] = {}
    for split in SCENE_SPLITS:
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


@dataclass(frozen=True)
class ShardedSplit:
    """One split of a sharded scenes directory; loads one shard at a time."""

    directory: Path
    split: str
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return sum(self.sizes)

    def load(self, index: int) -> Split:
        """Shard ``index`` in memory (a few MiB at the default sizes)."""
        arrays = {}
        for field in FIELDS:
            path = shard_file(self.directory, self.split, field, index)
            if not path.exists():
                raise DataError(f"{path}: missing shard {index} of {len(self.sizes)} listed in meta.json; "
                                "re-run the 'prepare' stage")
            arrays[field] = load_array(path)
        if len(arrays["labels"]) != self.sizes[index]:
            raise DataError(f"{self.directory}: {self.split} shard {index} holds {len(arrays['labels'])} "
                            f"scenes, meta.json says {self.sizes[index]}")
        return Split(**arrays)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image, e.g. (64, 64, 1), read from the first shard's header only."""
        return tuple(np.load(shard_file(self.directory, self.split, "images", 0), mmap_mode="r").shape[1:])

    def labels(self) -> np.ndarray:
        """Every label of the split, in order (one byte per scene)."""
        return np.concatenate([load_array(shard_file(self.directory, self.split, "labels", k))
                               for k in range(len(self.sizes))])

    def to_split(self) -> Split:
        """The whole split in memory, for the small splits evaluation reads at once."""
        parts = [self.load(k) for k in range(len(self.sizes))]
        return Split(**{field: np.concatenate([getattr(p, field) for p in parts]) for field in FIELDS})


def open_sharded(directory: Path, split: str) -> ShardedSplit | None:
    """The split's shards when ``directory/meta.json`` lists some, else None (single arrays)."""
    meta = directory / "meta.json"
    if not meta.exists():
        return None
    shards = read_json(meta).get("shards")
    if not shards:
        return None
    if split not in shards or not shards[split]:
        raise DataError(f"{meta}: lists shards but none for split {split!r}")
    return ShardedSplit(directory, split, tuple(int(n) for n in shards[split]))


def open_scenes(directory: Path, split: str) -> Split | ShardedSplit:
    """A split to train on: its shards (streamed) when sharded, else the arrays in memory."""
    from cnnpipe.data.prepared import load_scenes

    return open_sharded(directory, split) or load_scenes(directory, split)


def examples(split: Split | ShardedSplit) -> int:
    return len(split) if isinstance(split, ShardedSplit) else len(split.images)


def image_shape(split: Split | ShardedSplit) -> tuple[int, ...]:
    return split.image_shape if isinstance(split, ShardedSplit) else tuple(split.images.shape[1:])


def content_id(split: Split | ShardedSplit) -> tuple:
    """Cheap identity of a split's content for checkpoint fingerprints (sizes + label sum)."""
    if isinstance(split, ShardedSplit):
        return (split.split, split.sizes, int(split.labels().sum()))
    return (split.images.shape, int(split.labels.sum()))


def sharded_scenes_manifest(frames: list) -> "pd.DataFrame":
    """Join per-shard manifests (:func:`cnnpipe.data.manifest.scenes_manifest` of one shard
    each) into the manifest of the whole set: indices run on across a split's shards and
    leakage is marked across all of them. Rows, not pixels: ~0.4 KB per scene."""
    import pandas as pd

    from cnnpipe.data.validation.manifest import SCENES_COLUMNS, _mark_leakage

    df = pd.concat(frames, ignore_index=True)
    df["index"] = df.groupby("split").cumcount().astype(np.int64)
    return _mark_leakage(df)[list(SCENES_COLUMNS)]
