"""The scenes data set for localization and segmentation.

Each scene is a ``canvas`` x ``canvas`` uint8 image holding one item (resized to a random
side, pasted at a random position fully inside the canvas) over clutter (crops of other
items of the same split) and Gaussian noise, with the item's class, pixel mask and the
mask's tight box ``(x, y, w, h)`` as fractions of the canvas.

Deterministic from the seed: every random number is drawn from the ``rng`` passed in, in a
fixed order, and each split gets its own child stream (:func:`split_rngs`), so changing
``n_test`` does not change the train scenes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from cnnpipe.config import ScenesParams
from cnnpipe.data.prepared import SPLITS
from cnnpipe.errors import DataError

_NOISE_CHUNK = 1024  # scenes per noise draw: bounds memory (float32 canvases) at ~16 MiB


def split_counts(params: ScenesParams) -> dict[str, int]:
    """How many scenes each split gets (``prepare.scenes.n_<split>``)."""
    return {"train": params.n_train, "val": params.n_val, "test": params.n_test}


def split_rngs(seed: int, splits: tuple[str, ...] = SPLITS) -> dict[str, np.random.Generator]:
    """One independent generator per split, spawned from ``seed`` in a fixed order."""
    children = np.random.SeedSequence(seed).spawn(len(splits))
    return {split: np.random.default_rng(child) for split, child in zip(splits, children)}


def _resize(item: np.ndarray, side: int) -> np.ndarray:
    """Resize a square-ish uint8 item so its longer side is ``side`` (aspect kept)."""
    h, w = item.shape
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (width, height)
    # Bilinear (antialiased when shrinking) rather than Lanczos: Lanczos rings, and the
    # ringing would leak into the mask threshold as halos.
    return np.asarray(Image.fromarray(np.ascontiguousarray(item)).resize(size, Image.Resampling.BILINEAR))


def make_scenes(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    params: ScenesParams,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Compose ``n`` scenes from the items ``images`` uint8 (N, H, W) with ``labels`` (N,).

    Returns ``images`` uint8 (n, C, C, 1), ``masks`` uint8 (n, C, C) in {0, 1}, ``boxes``
    float32 (n, 4) = (x, y, w, h) fractions of the canvas, ``labels`` uint8 (n,).
    Clutter fragments come only from ``images`` (and never from the scene's own item), so
    passing one split's items keeps the scenes inside that split.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"make_scenes: expected uint8 (N, H, W) items, got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise DataError(f"make_scenes: {len(images)} items but {len(labels)} labels")
    n_items, h, w = images.shape
    canvas = params.canvas
    k = params.clutter
    # An all-black item has no mask and no box: never pick one as a scene's item.
    candidates = np.flatnonzero(images.reshape(n_items, -1).max(axis=1) > 0)
    if n > 0 and len(candidates) == 0:
        raise DataError("make_scenes: every item is blank (all zeros); nothing to paste")
    if n > 0 and k > 0 and n_items < 2:
        raise DataError("make_scenes: clutter needs at least 2 items (fragments come from other items)")

    # All random numbers first, in a fixed order, vectorized; the loop below only reads them.
    item = candidates[rng.integers(0, len(candidates), n)] if n else np.empty(0, np.int64)
    side = rng.integers(params.min_side, params.max_side + 1, n)
    row = rng.integers(0, canvas - side + 1)
    col = rng.integers(0, canvas - side + 1)
    src = rng.integers(0, max(n_items - 1, 1), (n, k))
    src += src >= item[:, None]  # skip the scene's own item: draw from the other N-1
    frag = np.minimum(rng.integers(params.clutter_min, params.clutter_max + 1, (n, k)), min(h, w))
    crop_r = rng.integers(0, h - frag + 1)
    crop_c = rng.integers(0, w - frag + 1)
    put_r = rng.integers(0, canvas - frag + 1)
    put_c = rng.integers(0, canvas - frag + 1)

    # Plain Python ints in the loop: numpy scalar indexing is several times slower.
    item_l, side_l, row_l, col_l = item.tolist(), side.tolist(), row.tolist(), col.tolist()
    src_l, frag_l = src.tolist(), frag.tolist()
    crop_r_l, crop_c_l, put_r_l, put_c_l = crop_r.tolist(), crop_c.tolist(), put_r.tolist(), put_c.tolist()

    out = np.zeros((n, canvas, canvas), np.uint8)
    masks = np.zeros((n, canvas, canvas), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for s in range(n):
        scene = out[s]
        for j in range(k):
            f, cr, cc, pr, pc = frag_l[s][j], crop_r_l[s][j], crop_c_l[s][j], put_r_l[s][j], put_c_l[s][j]
            view = scene[pr : pr + f, pc : pc + f]
            np.maximum(view, images[src_l[s][j], cr : cr + f, cc : cc + f], out=view)

        pasted = _resize(images[item_l[s]], side_l[s])
        ph, pw = pasted.shape
        mask = pasted >= params.mask_threshold * float(pasted.max())
        r, c = row_l[s], col_l[s]
        region = scene[r : r + ph, c : c + pw]
        # The item lies on top of the clutter: inside its mask it overwrites (occludes);
        # its faint fringe below the threshold max-blends, so the edges stay soft.
        region[...] = np.where(mask, pasted, np.maximum(region, pasted))
        masks[s, r : r + ph, c : c + pw] = mask
        # The box is the mask's tight bounding box, so it bounds the mask by construction.
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes[s] = (
            (c + cols[0]) / canvas,
            (r + rows[0]) / canvas,
            (cols[-1] - cols[0] + 1) / canvas,
            (rows[-1] - rows[0] + 1) / canvas,
        )

    if params.noise_std > 0:
        scale = np.float32(params.noise_std)
        for start in range(0, n, _NOISE_CHUNK):
            block = out[start : start + _NOISE_CHUNK]
            noisy = block.astype(np.float32) / np.float32(255.0)
            noisy += scale * rng.standard_normal(block.shape, dtype=np.float32)
            block[...] = np.rint(np.clip(noisy, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)

    return {
        "images": out[..., np.newaxis],
        "masks": masks,
        "boxes": boxes,
        "labels": labels[item].astype(np.uint8),
    }


def build_scene_splits(
    images: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    params: ScenesParams,
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Scenes for train/val/test, each composed only from that split's items."""
    counts = split_counts(params)
    rngs = split_rngs(seed)
    return {
        split: make_scenes(images[split], labels[split], counts[split], params, rngs[split])
        for split in SPLITS
    }
