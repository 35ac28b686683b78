"""Manifest and Great Expectations suite of a user's own dataset, whatever its format.

Sizes may vary between images (they are resized later), so the suite checks what must hold
for every format, plus the box and mask expectations where the format has them: boxes with
w, h > 0 inside their image, masks of their image's size with values in the class set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cnnpipe.data.items import TaskData
from cnnpipe.data.validation.gx import SuiteRun, ValidationReport, import_gx
from cnnpipe.data.validation.manifest import mark_leakage
from cnnpipe.data.validation.suites import class_balance_table
from cnnpipe.errors import ValidationFailed

BASE_COLUMNS = ("split", "index", "file", "label", "height", "width", "mode", "channels",
                "min", "max", "mean", "sha256", "in_other_split")
BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h", "box_inside")
MASK_COLUMNS = ("mask_file", "mask_height", "mask_width", "mask_matches_image", "mask_values_ok", "mask_coverage")


def check_class_count(data: TaskData, what: str) -> None:
    """A classifier needs at least 2 classes: trained on one, it is right on every test image,
    scores accuracy 1.0 and would pass any gate. Checked before the suite, so nothing is written."""
    names = data.class_names
    if len(names) < 2:
        raise ValidationFailed(f"{what}: needs at least 2 classes to train a classifier, found {len(names)} "
                               f"({', '.join(names) or 'none'})")


def own_manifest(data: TaskData) -> pd.DataFrame:
    """One row per item of each split, with ``box_inside`` and ``mask_matches_image`` derived."""
    frames = []
    for split, items in data.splits.items():
        df = pd.DataFrame(items.rows)
        df.insert(0, "index", np.arange(len(df), dtype=np.int64))
        df.insert(0, "split", split)
        frames.append(df)
    df = mark_leakage(pd.concat(frames, ignore_index=True))
    columns = list(BASE_COLUMNS)
    if "box_x" in df:
        df["box_inside"] = ((df.box_x >= 0) & (df.box_y >= 0) & (df.box_x + df.box_w <= df.width)
                            & (df.box_y + df.box_h <= df.height))
        columns += BOX_COLUMNS
    if "mask_height" in df:
        df["mask_matches_image"] = (df.mask_height == df.height) & (df.mask_width == df.width)
        columns += MASK_COLUMNS
    return df[columns]


def validate_own(df: pd.DataFrame, data: TaskData, what: str) -> ValidationReport:
    """Schema, no nulls, labels, pixel range, leakage, every class present in train; boxes and
    masks where present. ``observed`` has the counts per split and class."""
    E = import_gx().expectations
    n = len(data.class_names)
    # Segmentation folders carry no image label (all 0): their classes live in the masks.
    label_set = list(range(n)) if not (data.format == "folders" and data.mask_kind) else [0]
    expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=list(df.columns), exact_match=True),
        *[E.ExpectColumnValuesToNotBeNull(column=c) for c in df.columns],
        E.ExpectColumnValuesToBeInSet(column="label", value_set=label_set),
        E.ExpectColumnValuesToBeBetween(column="height", min_value=1),
        E.ExpectColumnValuesToBeBetween(column="width", min_value=1),
        E.ExpectColumnValuesToBeInSet(column="channels", value_set=[data.channels]),
        E.ExpectColumnValuesToBeBetween(column="min", min_value=0),
        E.ExpectColumnValuesToBeBetween(column="max", max_value=255),
        E.ExpectColumnValuesToBeInSet(column="in_other_split", value_set=[False]),
    ]
    if "box_inside" in df:
        expectations += [
            E.ExpectColumnValuesToBeBetween(column="box_w", min_value=0, strict_min=True),
            E.ExpectColumnValuesToBeBetween(column="box_h", min_value=0, strict_min=True),
            E.ExpectColumnValuesToBeInSet(column="box_inside", value_set=[True]),
        ]
    if "mask_matches_image" in df:
        expectations += [
            E.ExpectColumnValuesToBeInSet(column="mask_matches_image", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="mask_values_ok", value_set=[True]),
        ]
    run = SuiteRun(what)
    run.validate("manifest", df, expectations, ["split", "index"])
    counts = class_balance_table(df, len(label_set))
    train = counts[counts.split == "train"].reset_index(drop=True)
    run.validate("class_counts", train, [E.ExpectColumnValuesToBeBetween(column="count", min_value=1)],
                 ["split", "label"])
    names = data.class_names if len(label_set) == n else ["all"]
    observed = {
        "rows": int(len(df)),
        "class_counts": {split: {names[int(r.label)]: int(r.count) for r in g.itertuples()}
                         for split, g in counts.groupby("split", sort=True)},
        "sizes": {"height": [int(df.height.min()), int(df.height.max())],
                  "width": [int(df.width.min()), int(df.width.max())]},
    }
    return run.report(observed)
