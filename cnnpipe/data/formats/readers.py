"""The other own-data formats: IDX (any MNIST-like set), Oxford-IIIT Pet, CSV boxes; and
:func:`read_task_data`, which picks the reader a task's ``datasets`` params name."""

from __future__ import annotations

import csv
import hashlib
import logging
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from cnnpipe.config import DatasetParams, FetchParams
from cnnpipe.data.formats.folders import read_class_folders, read_segmentation_folders
from cnnpipe.data.formats.items import (
    Items,
    TaskData,
    check_labels_fit,
    need_dir,
    split_off_test,
)
from cnnpipe.data.images import Loaded, load_image, load_mask, resize_mask
from cnnpipe.data.raw.archive import safe_extract
from cnnpipe.data.raw.fetch import FASHION_MNIST_SPLITS, _download, _find_in_dir, _Skip
from cnnpipe.data.raw.idx import read_idx_pair
from cnnpipe.errors import DataError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# IDX: the four MNIST file names, plain or .gz, any image size
# --------------------------------------------------------------------------------------


def read_idx_dir(params: DatasetParams) -> TaskData:
    root = need_dir(Path(params.path), "IDX directory (datasets.classification.path)")
    names = [n for pair in FASHION_MNIST_SPLITS.values() for n in pair]
    try:
        files = _find_in_dir(root, names)
    except _Skip as missing:
        raise DataError(str(missing)) from None
    raw = {split: read_idx_pair(files[i], files[l]) for split, (i, l) in FASHION_MNIST_SPLITS.items()}
    native = raw["train"][0].shape[1] if raw["train"][0].ndim >= 3 else None
    side, channels = params.side(native), params.channels
    n_labels = max((int(y.max()) + 1 for _, y in raw.values() if len(y)), default=0)
    class_names = list(params.class_names or [str(k) for k in range(n_labels)])
    if n_labels > len(class_names):
        raise DataError(f"{files['train-labels-idx1-ubyte']}: labels reach {n_labels - 1} but "
                        f"datasets.classification.class_names names {len(class_names)} classes")
    check_labels_fit(class_names, str(root))
    splits: dict[str, Items] = {}
    for split, (images, labels) in raw.items():
        if images.dtype != np.uint8:
            raise DataError(f"{files[FASHION_MNIST_SPLITS[split][0]]}: images must be uint8 (0..255), got {images.dtype}")
        items = Items()
        for k, (image, label) in enumerate(zip(images, labels)):
            array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
            pil = Image.fromarray(array)
            digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            pil = pil.convert("L" if channels == 1 else "RGB")
            if pil.size != (side, side):
                pil = pil.resize((side, side), Image.Resampling.BILINEAR)
            loaded = Loaded(np.asarray(pil), int(array.shape[0]), int(array.shape[1]), pil.mode, digest)
            items.add(loaded, int(label), Path(f"{files[FASHION_MNIST_SPLITS[split][0]].name}[{k}]"))
        splits[split] = items
    source = {"location": str(params.path), "files": sorted(p.name for p in files.values())}
    return TaskData("idx", class_names, splits, source, side=side, channels=channels)


# --------------------------------------------------------------------------------------
# Oxford-IIIT Pet: images/*.jpg, annotations/{trimaps/*.png, xmls/*.xml, trainval.txt, test.txt}
# --------------------------------------------------------------------------------------

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3
OXFORD_ARCHIVES = ("images.tar.gz", "annotations.tar.gz")  # the official download's two files


def _find_oxford_root(top: Path) -> Path:
    """The directory holding ``images/`` and ``annotations/`` (itself or one level down)."""
    for candidate in (top, *sorted(p for p in top.iterdir() if p.is_dir())):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    raise DataError(f"{top}: no Oxford-IIIT Pet layout (images/ and annotations/) found")


def download_oxford(url: str, dest: Path, fetch: FetchParams) -> Path:
    """Download ``url`` (one archive, or the base of the official two) and extract it safely."""
    urls = [url] if url.rstrip("/").endswith((".tar.gz", ".tgz", ".tar")) else \
        [f"{url.rstrip('/')}/{name}" for name in OXFORD_ARCHIVES]
    for k, one in enumerate(urls):
        archive = dest / f"download-{k}.tar"
        try:
            _download(one, archive, fetch.timeout_s, fetch.retries, backoff_s=1.0)
        except _Skip as err:
            raise DataError(f"oxford_pet: cannot download: {err}") from None
        safe_extract(archive, dest / "extracted")
        archive.unlink()
    return _find_oxford_root(dest / "extracted")


def _split_lists(root: Path) -> dict[str, str]:
    """stem -> "train" | "test" from annotations/trainval.txt and test.txt (absent: {})."""
    out: dict[str, str] = {}
    for split, name in (("train", "trainval.txt"), ("test", "test.txt")):
        path = root / "annotations" / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    out[line.split()[0]] = split
    return out


def _head_box(path: Path) -> tuple[str, tuple[int, int, int, int]]:
    """(species, (x, y, w, h) pixels) of the first object in a head-box XML (VOC, 1-based)."""
    try:
        root = ET.parse(path).getroot()
        obj = root.find("object")
        box = obj.find("bndbox")  # type: ignore[union-attr]
        x0, y0, x1, y1 = (int(float(box.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore
        species = obj.find("name").text.strip().lower()  # type: ignore[union-attr]
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a head-box annotation (VOC XML with object/name and bndbox): {err}") from None
    return species, (x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1)


def read_oxford_pet(params: DatasetParams, seed: int, fetch: FetchParams) -> TaskData:
    """Items = images with a head box and a trimap (the annotated trainval subset upstream).

    Labels: species (cat/dog) or breed (the file-name prefix). Masks: pet + its border (trimap
    1 and 3) as foreground. Boxes: the head box. Split: annotations/test.txt where it covers
    annotated items, else a seeded stratified split of ``test_fraction``.
    """
    with tempfile.TemporaryDirectory(prefix="cnnpipe-oxford-") as scratch:
        if params.url:
            root = download_oxford(params.url, Path(scratch), fetch)
        else:
            root = _find_oxford_root(need_dir(Path(params.path), "Oxford-IIIT Pet directory"))
        return _read_oxford_root(root, params, seed)


def _read_oxford_root(root: Path, params: DatasetParams, seed: int) -> TaskData:
    images_dir = need_dir(root / "images", "images folder")
    xmls = need_dir(root / "annotations" / "xmls", "annotations/xmls folder")
    trimaps = need_dir(root / "annotations" / "trimaps", "annotations/trimaps folder")
    side, channels = params.side(), params.channels
    records = []
    for xml in sorted(xmls.glob("*.xml")):
        stem = xml.stem
        image = images_dir / f"{stem}.jpg"
        trimap = trimaps / f"{stem}.png"
        for needed in (image, trimap):
            if not needed.is_file():
                raise DataError(f"{xml}: has no matching {needed}")
        species, box = _head_box(xml)
        label_name = species if params.classes == "species" else stem.rsplit("_", 1)[0]
        records.append((stem, image, trimap, label_name, box))
    if not records:
        raise DataError(f"{xmls}: no head-box annotations (*.xml)")
    names = sorted({r[3] for r in records})
    check_labels_fit(names, str(root))
    lists = _split_lists(root)
    pool: dict[str, Items] = {"train": Items(), "test": Items()}
    for stem, image_file, trimap_file, label_name, (x, y, w, h) in records:
        loaded = load_image(image_file, side, channels)
        trimap = load_mask(trimap_file)
        mask = np.isin(trimap, (TRIMAP_PET, TRIMAP_BORDER)).astype(np.uint8)
        items = pool[lists.get(stem, "train")]
        H, W = loaded.height, loaded.width
        items.boxes.append((x / W, y / H, w / W, h / H))
        items.masks.append(resize_mask(mask, side))
        items.add(
            loaded, names.index(label_name), image_file,
            box_x=float(x), box_y=float(y), box_w=float(w), box_h=float(h),
            mask_file=str(trimap_file), mask_height=int(trimap.shape[0]), mask_width=int(trimap.shape[1]),
            mask_values_ok=set(np.unique(trimap).tolist()) <= {TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER},
            mask_coverage=float(mask.mean()),
        )
    layout = "annotations/test.txt"
    if not pool["test"].labels:
        layout = "seeded split"
        pool = split_off_test(pool["train"], params.test_fraction, seed)
    source = {"location": params.url or str(params.path), "classes": params.classes, "layout": layout}
    return TaskData("oxford_pet", names, pool, source, mask_kind="binary", side=side, channels=channels)


# --------------------------------------------------------------------------------------
# CSV: file, class, x, y, w, h (pixels, top-left corner) per row, one box per image
# --------------------------------------------------------------------------------------

CSV_COLUMNS = ("file", "class", "x", "y", "w", "h")


def read_csv_boxes(params: DatasetParams, seed: int) -> TaskData:
    path = Path(params.path)
    if not path.is_file():
        raise DataError(f"{path}: CSV of boxes (datasets.localization.path) not found")
    image_root = Path(params.image_root) if params.image_root else path.parent
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if rows and [c.strip().lower() for c in rows[0]] == list(CSV_COLUMNS):
        rows, first = rows[1:], 2
    else:
        first = 1
    parsed = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=first):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(CSV_COLUMNS):
            raise DataError(f"{path}:{line}: expected {len(CSV_COLUMNS)} columns ({', '.join(CSV_COLUMNS)}), got {len(row)}")
        file, label = row[0].strip(), row[1].strip()
        try:
            x, y, w, h = (float(v) for v in row[2:])
        except ValueError:
            raise DataError(f"{path}:{line}: x, y, w, h must be numbers, got {row[2:]}") from None
        if file in seen:
            raise DataError(f"{path}:{line}: {file} already has a box on line {seen[file]}; "
                            "the localizer predicts one box per image")
        seen[file] = line
        parsed.append((file, label, (x, y, w, h)))
    if not parsed:
        raise DataError(f"{path}: no rows")
    names = sorted({label for _, label, _ in parsed})
    check_labels_fit(names, str(path))
    side, channels = params.side(), params.channels
    pool = Items()
    for file, label, (x, y, w, h) in parsed:
        image_file = image_root / file
        loaded = load_image(image_file, side, channels)
        H, W = loaded.height, loaded.width
        pool.boxes.append((x / W, y / H, w / W, h / H))
        pool.add(loaded, names.index(label), image_file, box_x=x, box_y=y, box_w=w, box_h=h)
    splits = split_off_test(pool, params.test_fraction, seed)
    source = {"location": str(path), "image_root": str(image_root), "layout": "seeded split"}
    return TaskData("csv", names, splits, source, side=side, channels=channels)


# --------------------------------------------------------------------------------------


def read_task_data(task: str, params: DatasetParams, seed: int, fetch: FetchParams) -> TaskData:
    """Read the own dataset ``params`` names for ``task`` (not the built-in formats)."""
    readers = {
        ("classification", "idx"): lambda: read_idx_dir(params),
        ("classification", "folders"): lambda: read_class_folders(params, seed),
        ("segmentation", "folders"): lambda: read_segmentation_folders(params, seed),
        ("localization", "csv"): lambda: read_csv_boxes(params, seed),
        ("localization", "oxford_pet"): lambda: read_oxford_pet(params, seed, fetch),
        ("segmentation", "oxford_pet"): lambda: read_oxford_pet(params, seed, fetch),
    }
    key = (task, params.format)
    if key not in readers:
        raise DataError(f"datasets.{task}: format {params.format!r} is built in, not read from files")
    data = readers[key]()
    for split in ("train", "test"):
        if not data.splits[split].labels:
            raise DataError(f"datasets.{task} ({params.path or params.url}): the {split} split is empty")
    return data
