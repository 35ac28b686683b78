"""Sharded scenes: composed and written a shard at a time, streamed back through tf.data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import params_with, section, write_params, write_tiny_idx_dataset

from cnnpipe.config import ParamsError
from cnnpipe.data.pipeline import make_sharded_dataset, split_dataset
from cnnpipe.data.prepared import PreparedSet, ShardedSplit, Split
from cnnpipe.data.scenes.shards import (
    iter_scene_shards,
    shard_sizes,
)
from cnnpipe.errors import DataError
from cnnpipe.io import save_array, write_json


def test_shard_sizes_cover_n() -> None:
    assert shard_sizes(10, 4) == [4, 4, 2]
    assert shard_sizes(8, 4) == [4, 4]
    assert shard_sizes(3, 10) == [3]
    with pytest.raises(ValueError):
        shard_sizes(3, 0)


def test_shard_size_is_validated() -> None:
    assert params_with().prepare.shard_size == 0  # default: today's single arrays
    with pytest.raises(ParamsError, match="prepare.shard_size"):
        params_with({"prepare": {"shard_size": -1}})


def test_each_shard_depends_only_on_its_own_stream() -> None:
    rng = np.random.default_rng(0)
    items = rng.integers(1, 255, (30, 28, 28), dtype=np.uint8)
    labels = (np.arange(30) % 10).astype(np.uint8)
    params = section("prepare.scenes", n_train=10)
    full = list(iter_scene_shards(items, labels, 10, params, seed=5, split="train", shard_size=4))
    assert [len(s["labels"]) for s in full] == [4, 4, 2]
    again = list(iter_scene_shards(items, labels, 10, params, seed=5, split="train", shard_size=4))
    for a, b in zip(full, again):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    # More scenes add shards; the first shards stay the same (nothing depends on the total).
    longer = list(iter_scene_shards(items, labels, 14, params, seed=5, split="train", shard_size=4))
    assert all(np.array_equal(full[i]["images"], longer[i]["images"]) for i in range(2))
    assert not np.array_equal(full[0]["images"], full[1]["images"])
    other = next(iter_scene_shards(items, labels, 10, params, seed=5, split="val", shard_size=4))
    assert not np.array_equal(full[0]["images"], other["images"])


def _write_shards(directory: Path, sizes: list[int]) -> ShardedSplit:
    """Shards whose image pixels all equal the scene's global index (and label = index % 10)."""
    directory.mkdir(parents=True)
    start = 0
    for k, n in enumerate(sizes):
        index = np.arange(start, start + n)
        save_array(directory / f"train_images-{k:05d}.npy",
                   np.broadcast_to(index[:, None, None, None], (n, 4, 4, 1)).astype(np.uint8))
        save_array(directory / f"train_labels-{k:05d}.npy", (index % 10).astype(np.uint8))
        save_array(directory / f"train_boxes-{k:05d}.npy", np.tile(index[:, None] / 100, (1, 4)).astype(np.float32))
        save_array(directory / f"train_masks-{k:05d}.npy", np.zeros((n, 4, 4), np.uint8))
        start += n
    write_json(directory / "meta.json", {"class_names": [str(i) for i in range(10)], "shards": {"train": sizes}})
    sharded = PreparedSet.open(directory).split("train")
    assert isinstance(sharded, ShardedSplit)
    return sharded


def _targets(split: Split) -> dict[str, np.ndarray]:
    return {"label": split.labels.astype(np.int32), "box": split.boxes}


def test_streamed_eval_pass_reads_every_scene_once_in_order(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "s", [5, 5, 3])
    assert len(shards) == 13 and shards.image_shape == (4, 4, 1)
    ds = make_sharded_dataset(shards, _targets, batch_size=4, training=False, seed=0)
    seen = []
    for x, y in ds.as_numpy_iterator():
        index = np.rint(x[:, 0, 0, 0] * 255).astype(int)
        assert np.array_equal(y["label"], index % 10)  # images and targets stay paired
        assert np.allclose(y["box"][:, 0], index / 100)
        seen.extend(index.tolist())
    # Two shards interleaved at a time: every scene exactly once.
    assert sorted(seen) == list(range(13))
    whole = PreparedSet.open(tmp_path / "s").load("train")  # readers that want it all get the concatenation
    assert np.array_equal(whole.labels, np.arange(13) % 10)


def test_streamed_training_shuffles_repeats_and_keeps_pairs(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "s", [5, 5, 3])
    ds = split_dataset(shards, _targets, batch_size=4, training=True, seed=1)
    batches = list(ds.take(10).as_numpy_iterator())  # 40 examples: about three epochs
    index = np.concatenate([np.rint(x[:, 0, 0, 0] * 255).astype(int) for x, _ in batches])
    labels = np.concatenate([y["label"] for _, y in batches])
    assert np.array_equal(labels, index % 10)
    assert set(index.tolist()) == set(range(13))
    assert index[:13].tolist() != list(range(13))  # shuffled
    again = np.concatenate([x[:, 0, 0, 0] for x, _ in split_dataset(
        shards, _targets, batch_size=4, training=True, seed=1).take(10).as_numpy_iterator()])
    assert np.array_equal(np.rint(again * 255).astype(int), index)  # seeded: the same order


def test_missing_shard_is_named(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "s", [5, 5])
    (tmp_path / "s" / "train_masks-00001.npy").unlink()
    with pytest.raises(DataError, match="train_masks-00001.npy.*shard 1 of 2"):
        shards.load(1)


def test_prepare_stage_writes_shards_streams_and_validates(tmp_path: Path) -> None:
    import stages.prepare as stage
    from cnnpipe.config import load_params

    raw = tmp_path / "raw" / "fashion-mnist"
    data = write_tiny_idx_dataset(raw, n_train=120, n_test=30)
    (raw / "source.json").write_text(
        json.dumps({"class_names": [f"c{i}" for i in range(10)], "image_shape": list(data.x_train.shape[1:])})
    )
    params = {
        "seed": 11,
        "paths": {k: str(tmp_path / k) for k in ("raw", "prepared", "reports", "models", "metrics", "plots")},
        "prepare": {"val_fraction": 0.2, "shard_size": 5, "scenes": {"n_train": 16, "n_val": 6, "n_test": 5}},
    }
    stage.body(load_params(write_params(tmp_path / "params.yaml", params)))

    scenes = tmp_path / "prepared" / "scenes"
    meta = json.loads((scenes / "meta.json").read_text())
    assert meta["shards"] == {"train": [5, 5, 5, 1], "val": [5, 1], "test": [5]}
    assert meta["counts"] == {"train": 16, "val": 6, "test": 5} and meta["shard_size"] == 5
    assert not (scenes / "train_images.npy").exists()
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["scenes"]  # no staging
    train = PreparedSet.open(scenes).split("train")
    assert isinstance(train, ShardedSplit) and len(train) == 16
    whole = PreparedSet.open(scenes).load("train")
    assert whole.images.shape == (16, 64, 64, 1) and whole.masks.shape == (16, 64, 64)
    report = json.loads((tmp_path / "reports" / "scenes_validation" / "results.json").read_text())
    assert report["success"] is True
    # One manifest over every shard: indices run on across shards, so GX checked all 27 scenes.
    assert report["observed"]["rows_per_split"] == {"train": 16, "val": 6, "test": 5}


def test_unet_and_localizer_train_on_streamed_shards(tmp_path: Path) -> None:
    from cnnpipe.data.scenes.shards import write_scene_shards
    from cnnpipe.training.localizer import train_localizer
    from cnnpipe.training.outputs import TrainOutputs
    from cnnpipe.training.unet import train_unet

    rng = np.random.default_rng(0)
    items = {s: rng.integers(1, 255, (20, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")}
    labels = {s: (np.arange(20) % 10).astype(np.uint8) for s in items}
    scenes = section("prepare.scenes", canvas=32, min_side=12, max_side=20, clutter=2, n_train=24, n_val=8, n_test=4)
    sizes = write_scene_shards(tmp_path / "s", items, labels, scenes, seed=3, shard_size=10)
    write_json(tmp_path / "s" / "meta.json", {"class_names": [str(i) for i in range(10)], "shards": sizes})
    data = PreparedSet.open(tmp_path / "s")
    train, val = data.split("train"), data.split("val")
    assert isinstance(train, ShardedSplit) and train.sizes == (10, 10, 4)

    fit = section("train_unet.fit", epochs=1, batch_size=8, warmup_epochs=0.0, precision="float32")
    out = TrainOutputs.named(tmp_path / "m", tmp_path / "p", "unet")
    result = train_unet(train, val, 10, section("train_unet", filters=(4, 8), fit=fit), section("augment"), 0, out)
    assert result.epochs_run == 1 and np.isfinite(result.history["val_loss"][-1])
    assert result.model.input_shape == (None, 32, 32, 1)
    out = TrainOutputs.named(tmp_path / "m", tmp_path / "p", "localizer")
    result = train_localizer(train, val, 10, section("train_localizer", fit=fit), section("augment"), 0, out,
                             None, section("train_classifier", filters=(4, 8), convs_per_block=1))
    assert result.epochs_run == 1 and "val_box_iou" in result.history
