"""Oxford-IIIT Pet: ``images/*.jpg`` and ``annotations/{trimaps/*.png, xmls/*.xml, trainval.txt,
test.txt}``, from a directory or downloaded (one archive, or the official two)."""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from cnnpipe.config import DatasetParams, FetchParams
from cnnpipe.data.images import load_image, load_mask, resize_mask
from cnnpipe.data.items import (
    Items,
    TaskData,
    check_labels_fit,
    need_dir,
    split_off_test,
)
from cnnpipe.data.raw.archive import safe_extract
from cnnpipe.data.raw.download import SourceUnavailable, download
from cnnpipe.errors import DataError

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
            download(one, archive, fetch.timeout_s, fetch.retries, backoff_s=1.0)
        except SourceUnavailable as err:
            raise DataError(f"oxford_pet: cannot download: {err}") from None
        safe_extract(archive, dest / "extracted", source=one)  # errors name the URL, not the temp file
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
