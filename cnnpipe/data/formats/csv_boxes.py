"""CSV boxes: ``file, class, x, y, w, h`` (pixels, top-left corner) per row, one box per image."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from cnnpipe.config import DatasetParams
from cnnpipe.data.images import load_image
from cnnpipe.data.items import Items, TaskData, check_labels_fit, split_off_test
from cnnpipe.errors import DataError

CSV_COLUMNS = ("file", "class", "x", "y", "w", "h")

log = logging.getLogger(__name__)


def read_csv_text(path: Path) -> str:
    """The CSV's text: UTF-8 (a leading byte-order mark dropped), else Latin-1 with a warning
    naming the file and the line of the first byte that is not UTF-8 (Latin-1 decodes any byte,
    so the rows are still read, and a name such as ``café`` keeps its letters)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        log.warning("%s: not UTF-8 (byte 0x%02x on line %d); read as Latin-1", path, raw[err.start], line)
        return raw.decode("latin-1")


def image_path(image_root: Path, file: str, where: str) -> Path:
    """``image_root / file``, refused when it resolves outside ``image_root`` (``..``, an absolute
    path, a symbolic link out)."""
    path = image_root / file
    if not path.resolve().is_relative_to(image_root.resolve()):
        raise DataError(f"{where}: {file} is outside image_root {image_root}; "
                        "CSV file names are relative to datasets.localization.image_root")
    return path


def read_csv_boxes(params: DatasetParams, seed: int) -> TaskData:
    """One box per image from the CSV ``params.path``; a seeded, stratified test split."""
    path = Path(params.path)
    if not path.is_file():
        raise DataError(f"{path}: CSV of boxes (datasets.localization.path) not found")
    image_root = Path(params.image_root) if params.image_root else path.parent
    rows = list(csv.reader(io.StringIO(read_csv_text(path), newline="")))
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
        parsed.append((image_path(image_root, file, f"{path}:{line}"), label, (x, y, w, h)))
    if not parsed:
        raise DataError(f"{path}: no rows")
    names = sorted({label for _, label, _ in parsed})
    check_labels_fit(names, str(path))
    side, channels = params.side(), params.channels
    pool = Items()
    for image_file, label, (x, y, w, h) in parsed:
        loaded = load_image(image_file, side, channels)
        H, W = loaded.height, loaded.width
        pool.boxes.append((x / W, y / H, w / W, h / H))
        pool.add(loaded, names.index(label), image_file, box_x=x, box_y=y, box_w=w, box_h=h)
    splits = split_off_test(pool, params.test_fraction, seed)
    source = {"location": str(path), "image_root": str(image_root), "layout": "seeded split"}
    return TaskData("csv", names, splits, source, side=side, channels=channels)
