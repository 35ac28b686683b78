"""Tiny datasets in the formats users bring: class folders, segmentation folders, Oxford-IIIT
Pet (directory or tar.gz), CSV boxes. Real PNG/JPEG files of varying size and mode."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(24, 20), (31, 40), (18, 18), (40, 28)]  # (width, height): they vary on purpose
MODES = ["L", "RGB", "RGBA", "P"]


def _picture(label: int, k: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A class-specific pattern (stripes whose period and direction follow the label) + noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    period = 3 + 2 * label
    wave = ((xx if label % 2 else yy) // period) % 2
    noise = rng.integers(0, 40, size=(h, w))
    return np.clip(wave * 200 + noise + k % 7, 0, 255).astype(np.uint8)


def save_image(path: Path, gray: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(gray)
    if mode == "RGB":
        image = Image.merge("RGB", (image, image, image))
    elif mode == "RGBA":
        image = Image.merge("RGBA", (image, image, image, Image.new("L", image.size, 255)))
    elif mode == "P":
        image = image.convert("P")
    image.save(path)


def write_class_folders(root: Path, classes=("boot", "hat", "sock"), n_per_class: int = 8,
                        splits: bool = True, seed: int = 0) -> Path:
    """``root/{train,test}/<class>/*.png|jpg`` (or ``root/<class>/...`` without ``splits``)."""
    rng = np.random.default_rng(seed)
    k = 0
    for split, n in (("train", n_per_class), ("test", max(2, n_per_class // 2))) if splits else (("", n_per_class),):
        for label, name in enumerate(classes):
            for i in range(n):
                size = SIZES[k % len(SIZES)]
                gray = _picture(label, k, size, rng)
                folder = root / split / name if split else root / name
                if k % 5 == 4:
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(gray).convert("RGB").save(folder / f"{name}_{i}.jpg", quality=95)
                else:
                    save_image(folder / f"{name}_{i}.png", gray, MODES[k % len(MODES)])
                k += 1
    return root


def _blob_mask(size: tuple[int, int], k: int, n_classes: int) -> np.ndarray:
    """A rectangle of class ``1 + k % n_classes`` (and, for 2+ classes, a second one)."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    x0, y0 = k % (w // 3), k % (h // 3)
    mask[y0 : y0 + h // 2, x0 : x0 + w // 2] = 1 + k % n_classes
    if n_classes > 1:
        mask[h - h // 4 :, w - w // 4 :] = 1 + (k + 1) % n_classes
    return mask


def write_segmentation_folders(root: Path, n: int = 16, n_classes: int = 1, binary_255: bool = True,
                               splits: bool = True, seed: int = 0) -> Path:
    """``root/{train,test}/{images,masks}``: bright objects where the mask is; masks are
    0/255 (binary) or class ids 0..n_classes."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", max(4, n // 3))) if splits else (("", n),):
        for k in range(count):
            size = SIZES[k % len(SIZES)]
            mask = _blob_mask(size, k, n_classes)
            gray = np.clip(rng.integers(0, 50, size=mask.shape) + 60 * mask.astype(np.int64) + 40 * (mask > 0), 0, 255)
            base = root / split if split else root
            save_image(base / "images" / f"item{k:03d}.png", gray.astype(np.uint8), MODES[k % len(MODES)])
            stored = (mask > 0).astype(np.uint8) * 255 if (n_classes == 1 and binary_255) else mask
            (base / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(stored).save(base / "masks" / f"item{k:03d}.png")
    return root


BREEDS = {"Abyssinian": "cat", "Bengal": "cat", "beagle": "dog", "pug": "dog"}


def write_oxford_pet(root: Path, per_breed: int = 5, seed: int = 0, with_test_list: bool = True) -> Path:
    """The Oxford-IIIT Pet layout: images/*.jpg, annotations/{trimaps/*.png, xmls/*.xml,
    trainval.txt, test.txt}, head boxes inside each image."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    lines = {"trainval": [], "test": []}
    k = 0
    for b, (breed, species) in enumerate(BREEDS.items()):
        for i in range(1, per_breed + 1):
            stem = f"{breed}_{i}"
            w, h = 48 + 4 * (k % 3), 40 + 2 * (k % 4)
            trimap = np.full((h, w), 2, np.uint8)
            x0, y0 = 4 + k % 5, 3 + k % 4
            trimap[y0 : y0 + h // 2, x0 : x0 + w // 2] = 1
            trimap[y0 - 1, x0 : x0 + w // 2] = 3
            pixels = np.where(trimap != 2, 180 if species == "cat" else 90, 30) + rng.integers(0, 30, (h, w))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(
                root / "images" / f"{stem}.jpg", quality=95)
            Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{stem}.png")
            hx0, hy0, hx1, hy1 = x0 + 1, y0 + 1, x0 + w // 4, y0 + h // 4  # 1-based, inclusive
            (root / "annotations" / "xmls" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                f"<depth>3</depth></size><object><name>{species}</name><bndbox><xmin>{hx0}</xmin>"
                f"<ymin>{hy0}</ymin><xmax>{hx1}</xmax><ymax>{hy1}</ymax></bndbox></object></annotation>")
            split = "test" if (with_test_list and i == per_breed) else "trainval"
            lines[split].append(f"{stem} {b + 1} {1 if species == 'cat' else 2} {i}")
            k += 1
    for split, rows in lines.items():
        (root / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def tar_directory(src: Path, archive: Path, arcname: str = "oxford-iiit-pet") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return archive


def evil_tar(archive: Path, kind: str) -> Path:
    """A tar.gz with one unsafe member: ``dotdot``, ``absolute`` or ``symlink``."""
    with tarfile.open(archive, "w:gz") as tar:
        if kind == "symlink":
            info = tarfile.TarInfo("oxford/images/link")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            name = "../escape.txt" if kind == "dotdot" else "/tmp/cnnpipe-absolute.txt"
            data = b"gotcha"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def write_csv_boxes(root: Path, n: int = 24, classes=("cup", "pen"), header: bool = True, seed: int = 0) -> Path:
    """``root/boxes.csv`` (file, class, x, y, w, h in pixels) + ``root/img/*.png``."""
    rng = np.random.default_rng(seed)
    rows = ["file,class,x,y,w,h"] if header else []
    for k in range(n):
        w, h = SIZES[k % len(SIZES)]
        label = k % len(classes)
        gray = rng.integers(0, 40, (h, w))
        bx, by, bw, bh = k % 5, k % 4, w // 2, h // 2
        gray[by : by + bh, bx : bx + bw] = 150 + 60 * label
        save_image(root / "img" / f"p{k:02d}.png", gray.astype(np.uint8), MODES[k % len(MODES)])
        rows.append(f"img/p{k:02d}.png,{classes[label]},{bx},{by},{bw},{bh}")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root / "boxes.csv"
