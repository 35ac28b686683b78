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
    check_link,
    display_name,
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


def _class_dirs(folder: Path, root: Path) -> dict[str, Path]:
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    for p in entries:
        if p.is_symlink() and (p.is_dir() or not p.exists()):
            check_link(p, root)
    dirs = {p.name: p for p in entries if p.is_dir()}
    if not dirs:
        raise DataError(f"{folder}: no class sub-folders (expected one folder of images per class)")
    return dirs


def read_class_folders(params: DatasetParams, seed: int) -> TaskData:
    root = need_dir(Path(params.path), "classification folders (datasets.classification.path)")
    side, channels = params.side(), params.channels
    roots = _split_roots(root)
    layout = roots or {"all": root}
    class_dirs = {split: _class_dirs(folder, root) for split, folder in layout.items()}
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
            files = list_images(folder, IMAGE_SUFFIXES, root)
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


LOSSY_MASKS = (".jpg", ".jpeg")  # JPEG blurs a mask's edges into values between the classes


def _by_stem(files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{p}: a second file with the stem {p.stem!r} (also {out[p.stem].name}); keep one")
        out[p.stem] = p
    return out


def _pairs(folder: Path, root: Path) -> list[tuple[Path, Path]]:
    images_dir = need_dir(folder / "images", "images folder")
    masks_dir = need_dir(folder / "masks", "masks folder")
    images = _by_stem(list_images(images_dir, (*(".png", ".jpg", ".jpeg"), *(".bmp", ".tif", ".tiff")), root))
    masks = _by_stem(list_images(masks_dir, IMAGE_SUFFIXES, root))
    lossy = [p for p in masks.values() if p.suffix.lower() in LOSSY_MASKS]
    if lossy:
        raise DataError(f"{lossy[0]}: a JPEG mask is lossy (its edges hold values between the classes); "
                        f"save masks as PNG ({len(lossy)} JPEG mask(s) in {masks_dir})")
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
    """``binary`` for masks holding only 0 and 255 or 0 and 1 (any non-zero is foreground);
    else ``index`` (class ids)."""
    return "binary" if values <= {0, 1, 255} else "index"


def _check_binary_255(raw: dict[str, list[tuple[Path, Path, np.ndarray]]]) -> None:
    """A set whose masks use 255 is a 0/255 binary set: a mask holding other values too
    (anti-aliased edges, a lossy save; 255 as "void" beside class ids) is refused, naming it and
    its values, rather than read as up to 255 class ids."""
    bad = []
    for pairs in raw.values():
        for _, mask_file, mask in pairs:
            extra = sorted(set(np.unique(mask).tolist()) - {0, 1, 255})
            if extra:
                bad.append((mask_file, extra))
    if bad:
        (mask_file, extra), shown = bad[0], ", ".join(str(v) for v in bad[0][1][:8])
        more = ", ..." if len(extra) > 8 else ""
        raise DataError(f"{mask_file}: holds {shown}{more} besides 0 and 255 (anti-aliased or lossy?) in a set "
                        f"of 0/255 masks ({len(bad)} such mask(s)); binary masks hold only 0 and 255 (or 0 and 1), "
                        "class-id masks 0..K")


def read_segmentation_folders(params: DatasetParams, seed: int) -> TaskData:
    root = need_dir(Path(params.path), "segmentation folders (datasets.segmentation.path)")
    side, channels = params.side(), params.channels
    roots = _split_roots(root) or {"all": root}
    raw: dict[str, list[tuple[Path, Path, np.ndarray]]] = {
        split: [(img, msk, load_mask(msk)) for img, msk in _pairs(folder, root)] for split, folder in roots.items()
    }
    values = {int(v) for pairs in raw.values() for _, _, m in pairs for v in np.unique(m)}
    if 255 in values:
        _check_binary_255(raw)
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
                loaded, 0, image_file, mask_file=display_name(mask_file), mask_height=int(mask.shape[0]),
                mask_width=int(mask.shape[1]), mask_values_ok=present <= allowed,
                mask_coverage=float(np.mean(stored != 0)),
            )
        splits[split] = items
    if "all" in splits:
        splits = split_off_test(splits["all"], params.test_fraction, seed)
    source = {"location": str(params.path), "mask_kind": kind, "mask_values": n_values,
              "layout": "train/test" if "all" not in roots else "seeded split"}
    return TaskData("folders", names, splits, source, mask_kind=kind, side=side, channels=channels)
