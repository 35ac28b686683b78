"""The training curves are also drawn as a PNG beside their CSV: real, deterministic, atomic."""

import numpy as np

from cnnpipe.training.curves import read_curves, write_curves_png

CSV = """epoch,accuracy,learning_rate,loss,val_accuracy,val_loss
0,0.5,0.001,1.2,0.55,1.1
1,0.7,0.0009,0.8,0.68,0.9
2,0.8,0.0005,0.6,0.74,0.85
"""


def test_curves_png_is_a_deterministic_png_beside_the_csv(tmp_path):
    csv_path = tmp_path / "history" / "classifier.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(CSV)
    epochs, values = read_curves(csv_path)
    assert epochs == [1, 2, 3] and set(values) == {"accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"}
    np.testing.assert_allclose(values["val_loss"], [1.1, 0.9, 0.85])

    png = csv_path.with_suffix(".png")
    write_curves_png(csv_path, png)
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n") and len(first) > 5000
    assert b"Software" not in first and b"matplotlib" not in first  # no version, no date
    write_curves_png(csv_path, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == first  # same curves, same bytes
    assert sorted(p.name for p in csv_path.parent.iterdir()) == ["classifier.csv", "classifier.png"]  # no temp left
