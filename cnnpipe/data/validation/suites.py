"""Great Expectations suites of the built-in data: the classification and the scenes manifests.

Each ``validate_*`` runs its expectations on the manifest (:mod:`cnnpipe.data.validation.manifest`)
through :class:`~cnnpipe.data.validation.gx.SuiteRun`; class balance, a property of a whole split
rather than of a row, is checked by a second suite on a derived per-class table (one row per
split and class, with its share).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cnnpipe.data.validation.gx import SuiteRun, ValidationReport, import_gx
from cnnpipe.data.validation.manifest import CLASSIFICATION_COLUMNS, SCENES_COLUMNS

# Box edges are float32 fractions; x + w may exceed 1 by a rounding step without being outside.
_EDGE_EPS = 1e-6


def _common_expectations(columns: Sequence[str], n_classes: int, not_null: Sequence[str]) -> list[Any]:
    E = import_gx().expectations
    return [
        E.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=True),
        *[E.ExpectColumnValuesToNotBeNull(column=c) for c in not_null],
        E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(n_classes))),
        E.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
        E.ExpectColumnValuesToBeBetween(column="min", min_value=0),
        E.ExpectColumnValuesToBeBetween(column="max", max_value=255),
        E.ExpectColumnValuesToBeInSet(column="in_other_split", value_set=[False]),
    ]


def class_balance_table(df: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """One row per (split, class in range(n_classes)): count and share of that split's images.

    A class missing from a split gets a row with share 0, so it fails the balance check.
    """
    counts = pd.crosstab(df["split"], df["label"]).reindex(columns=range(n_classes), fill_value=0)
    totals = df.groupby("split").size().reindex(counts.index)
    table = counts.stack().rename("count").reset_index()
    table.columns = ["split", "label", "count"]
    table["share"] = table["count"] / table["split"].map(totals).astype(np.float64)
    return table.astype({"label": np.int64, "count": np.int64})


def validate_classification(
    df: pd.DataFrame,
    *,
    class_names: Sequence[str],
    image_shape: Sequence[int],
    balance_tolerance: float,
) -> ValidationReport:
    """Check a classification manifest: schema, labels, shapes, pixel range, balance, leakage, nulls.

    Balance: in each split, every class's share must lie within
    ``(1 ± balance_tolerance) / n_classes``; the observed shares are in ``report.observed``.
    """
    E = import_gx().expectations
    n = len(class_names)
    height, width = image_shape
    run = SuiteRun("classification")
    run.validate(
        "manifest",
        df,
        [
            *_common_expectations(CLASSIFICATION_COLUMNS, n, CLASSIFICATION_COLUMNS),
            E.ExpectColumnValuesToBeInSet(column="height", value_set=[height]),
            E.ExpectColumnValuesToBeInSet(column="width", value_set=[width]),
        ],
        ["split", "index"],
    )
    balance = class_balance_table(df, n)
    lo, hi = (1 - balance_tolerance) / n, (1 + balance_tolerance) / n
    eps = 1e-12  # shares like 6000/60000 against bounds like 1/10 must not fail on rounding
    run.validate(
        "class_balance",
        balance,
        [E.ExpectColumnValuesToBeBetween(column="share", min_value=lo - eps, max_value=hi + eps)],
        ["split", "label"],
    )
    shares = {
        split: {class_names[int(row.label)]: round(float(row.share), 6) for row in group.itertuples()}
        for split, group in balance.groupby("split", sort=True)
    }
    observed = {"rows": int(len(df)), "class_shares": shares, "allowed_share": [round(lo, 9), round(hi, 9)]}
    return run.report(observed)


def validate_scenes(df: pd.DataFrame, *, n_classes: int, canvas: int) -> ValidationReport:
    """Check a scenes manifest: schema, labels, canvas size, boxes inside the canvas and
    bounding their masks, non-empty partial masks with values in {0,1}, leakage."""
    E = import_gx().expectations
    # The mask bbox columns are NaN for an empty mask; mask_coverage > 0 reports that case.
    not_null = [c for c in SCENES_COLUMNS if c not in ("mask_x", "mask_y", "mask_w", "mask_h")]
    run = SuiteRun("scenes")
    run.validate(
        "manifest",
        df,
        [
            *_common_expectations(SCENES_COLUMNS, n_classes, not_null),
            E.ExpectColumnValuesToBeInSet(column="height", value_set=[canvas]),
            E.ExpectColumnValuesToBeInSet(column="width", value_set=[canvas]),
            E.ExpectColumnValuesToBeBetween(column="box_x", min_value=0),
            E.ExpectColumnValuesToBeBetween(column="box_y", min_value=0),
            E.ExpectColumnValuesToBeBetween(column="box_w", min_value=0, strict_min=True),
            E.ExpectColumnValuesToBeBetween(column="box_h", min_value=0, strict_min=True),
            E.ExpectColumnValuesToBeBetween(column="box_x2", max_value=1 + _EDGE_EPS),
            E.ExpectColumnValuesToBeBetween(column="box_y2", max_value=1 + _EDGE_EPS),
            E.ExpectColumnValuesToBeBetween(
                column="mask_coverage", min_value=0, max_value=1, strict_min=True, strict_max=True
            ),
            E.ExpectColumnValuesToBeInSet(column="mask_values_ok", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="box_bounds_mask", value_set=[True]),
        ],
        ["split", "index"],
    )
    counts = {str(k): int(v) for k, v in df.groupby("split").size().items()}
    coverage = float(df["mask_coverage"].mean()) if len(df) else None
    return run.report({"rows": int(len(df)), "rows_per_split": counts, "mean_mask_coverage": coverage})
