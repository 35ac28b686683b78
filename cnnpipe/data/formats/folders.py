"""Folder layouts: one sub-folder per class (classification), ``images/`` + ``masks/``
(segmentation). A ``train/`` and a ``test/`` sub-folder, if both exist, are the splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnpipe.config import DatasetParams
from cnnpipe.data.images import IMAGE_SUFFIXES, load_image, load_mask, resize_mask
from cnnpipe.data.items import (
    Items,
    TaskData,
    check_labels_fit,
    list_images,
    need_dir,
    split_off_test,
)
from cnnpipe.errors import DataError


def _split_roots(root: Path) -> dict[str, Path] | None:
    train, test = root / "train", root / "test"
    if train.is_dir() and test.is_dir():
        return {"train": train, "test": test}
    return None


# --------------------------------------------------------------------------------------
# Classification: <root>[/train|/test]/<class>/<image>
# --------------------------------------------------------------------------------------


def _class_dirs(root: Path) -> dict[str, Path]:
    dirs = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not dirs:
        raise DataError(f"{root}: no class sub-folders (expected one folder of images per class)")
    return dirs


def read_class_folders(params: DatasetParams, seed: int) -> TaskData:
    root = need_dir(Path(params.path), "classification folders (datasets.classification.path)")
    side, channels = params.side(), params.channels
    roots = _split_roots(root)
    layout = roots or {"all": root}
    class_dirs = {split: _class_dirs(folder) for split, folder in layout.items()}
    names = sorted(class_dirs["train" if roots else "all"])
    check_labels_fit(names, str(root))
    if roots:
        extra = sorted(set(class_dirs["test"]) - set(names))
        if extra:
            raise DataError(f"{roots['test']}: class folder(s) {', '.join(extra)} have no counterpart in {roots['train']}")
    splits: dict[str, Items] = {}
    for split, dirs in class_dirs.items():
        items = Items()
        for name, folder in dirs.items():
            files = list_images(folder, IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for file in files:
                items.add(load_image(file, side, channels), names.index(name), file)
        splits[split] = items
    if not roots:
        splits = split_off_test(splits["all"], params.test_fraction, seed)
    source = {"location": str(params.path), "layout": "train/test" if roots else "seeded split"}
    return TaskData("folders", names, splits, source, side=side, channels=channels)


# --------------------------------------------------------------------------------------
# Segmentation: <root>[/train|/test]/images/<stem>.* + masks/<stem>.*
# --------------------------------------------------------------------------------------


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images_dir = need_dir(folder / "images", "images folder")
    masks_dir = need_dir(folder / "masks", "masks folder")
    images = {p.stem: p for p in list_images(images_dir, (*(".png", ".jpg", ".jpeg"), *(".bmp", ".tif", ".tiff")))}
    masks = {p.stem: p for p in list_images(masks_dir, (".png", ".bmp", ".tif", ".tiff", ".gif"))}
    if not images:
        raise DataError(f"{images_dir}: no images")
    lonely = sorted(set(images) - set(masks))
    if lonely:
        raise DataError(f"{images[lonely[0]]}: no mask with the same stem in {masks_dir} "
                        f"({len(lonely)} image(s) without a mask)")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(f"{masks[orphans[0]]}: no image with the same stem in {images_dir}")
    return [(images[s], masks[s]) for s in sorted(images)]


def mask_kind(values: set[int]) -> str:
    """``binary`` for masks holding only {0, 255} or {0, 1}; else ``index`` (class ids)."""
    return "binary" if values <= {0, 255} or values <= {0, 1} else "index"


def read_segmentation_folders(params: DatasetParams, seed: int) -> TaskData:
    root = need_dir(Path(params.path), "segmentation folders (datasets.segmentation.path)")
    side, channels = params.side(), params.channels
    roots = _split_roots(root) or {"all": root}
    raw: dict[str, list[tuple[Path, Path, np.ndarray]]] = {
        split: [(img, msk, load_mask(msk)) for img, msk in _pairs(folder)] for split, folder in roots.items()
    }
    values = {int(v) for pairs in raw.values() for _, _, m in pairs for v in np.unique(m)}
    kind = mask_kind(values)
    if kind == "binary":
        names = list(params.class_names or ["foreground"])
        allowed = {0, 1, 255}
        n_values = 2
    else:
        # Class ids 1..K are the classes; 0 is background. Names: params, else the ids.
        names = list(params.class_names or [str(k) for k in range(1, max(values) + 1)])
        allowed = set(range(len(names) + 1))
        n_values = len(names) + 1
    check_labels_fit(names, str(root))
    splits: dict[str, Items] = {}
    for split, pairs in raw.items():
        items = Items()
        for image_file, mask_file, mask in pairs:
            loaded = load_image(image_file, side, channels)
            stored = (mask != 0).astype(np.uint8) if kind == "binary" else mask
            present = set(np.unique(mask).tolist())
            items.masks.append(resize_mask(stored, side))
            items.add(
                loaded, 0, image_file, mask_file=str(mask_file), mask_height=int(mask.shape[0]),
                mask_width=int(mask.shape[1]), mask_values_ok=present <= allowed,
                mask_coverage=float(np.mean(stored != 0)),
            )
        splits[split] = items
    if "all" in splits:
        splits = split_off_test(splits["all"], params.test_fraction, seed)
    source = {"location": str(params.path), "mask_kind": kind, "mask_values": n_values,
              "layout": "train/test" if "all" not in roots else "seeded split"}
    return TaskData("folders", names, splits, source, mask_kind=kind, side=side, channels=channels)
