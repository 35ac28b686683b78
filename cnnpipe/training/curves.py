"""The training curves as a PNG beside their CSV, so they can be seen with no network.

The CSV (Keras' ``CSVLogger``: an ``epoch`` column, then one per metric) stays the DVC plot;
``dvc plots show`` renders its Vega charts with scripts from a CDN, while the PNG opens
anywhere. Drawn on an explicit Agg canvas (no ``pyplot`` global state) and written through
:func:`cnnpipe.io.write_png`, so the same curves always give the same bytes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.figure import Figure

from cnnpipe.io import write_png


def read_curves(csv_path: str | Path) -> tuple[list[int], dict[str, list[float]]]:
    """Epochs (1-based, as people count them) and each metric's values, from a history CSV."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    epochs = [int(r["epoch"]) + 1 for r in rows]
    values = {n: [float(r[n]) if r[n] not in ("", None) else math.nan for r in rows] for n in names}
    return epochs, values


def curves_figure(epochs: list[int], values: dict[str, list[float]], title: str) -> Figure:
    """One panel per metric, its training and validation (``val_``) series together."""
    groups: dict[str, list[str]] = {}
    for name in values:
        groups.setdefault(name.removeprefix("val_"), []).append(name)
    cols = min(3, max(1, len(groups)))
    rows = math.ceil(max(1, len(groups)) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows + 0.4), layout="constrained")
    for i, (base, names) in enumerate(sorted(groups.items())):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name in sorted(names, key=lambda n: n.startswith("val_")):
            ax.plot(epochs, values[name], marker="o", markersize=3,
                    label="validation" if name.startswith("val_") else "training")
        ax.set_title(base, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def write_curves_png(csv_path: str | Path, png_path: str | Path) -> None:
    """Draw the history CSV at ``csv_path`` as a PNG at ``png_path`` (written atomically)."""
    epochs, values = read_curves(csv_path)
    write_png(curves_figure(epochs, values, Path(csv_path).stem), png_path)
