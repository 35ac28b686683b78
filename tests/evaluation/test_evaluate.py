"""The evaluate stage end to end on tiny random stand-in models, plus its library functions."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import write_params

from cnnpipe.errors import ModelError
from cnnpipe.evaluation import evaluate as ev
from cnnpipe.io import read_json, save_array, write_json
from cnnpipe.taskspec import PRODUCERS, TASKS, TRANSFER_VARIANTS

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"c{k}" for k in range(10)]
N = 12  # test examples per set


# --------------------------------------------------------------------------------------
# Stand-ins with the contracted inputs and outputs (random weights: metrics only need ranges)
# --------------------------------------------------------------------------------------


def _classifier():
    import keras

    inp = keras.Input((28, 28, 1))
    b_in = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(b_in)
    x = keras.Model(b_in, h, name="backbone")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x), name="classifier")


def _scene_trunk():
    import keras

    inp = keras.Input((64, 64, 1))
    h = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inp)
    return inp, keras.layers.GlobalAveragePooling2D()(h)


def _scene_classifier():
    import keras

    inp, h = _scene_trunk()
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))


def _localizer():
    import keras

    inp, h = _scene_trunk()
    return keras.Model(inp, {
        "class": keras.layers.Dense(10, activation="softmax", name="class")(h),
        "box": keras.layers.Dense(4, activation="sigmoid", name="box")(h),
    })


def _unet(channels: int):
    import keras

    inp = keras.Input((64, 64, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    act = "sigmoid" if channels == 1 else "softmax"
    return keras.Model(inp, keras.layers.Conv2D(channels, 1, activation=act)(h))


def _save_models(models_dir: Path, unet_channels: int = 1) -> None:
    import keras

    keras.utils.set_random_seed(0)
    (models_dir / "transfer").mkdir(parents=True, exist_ok=True)
    _classifier().save(models_dir / "classifier.keras")
    for mode in TRANSFER_VARIANTS:
        _scene_classifier().save(models_dir / "transfer" / f"{mode}.keras")
    _localizer().save(models_dir / "localizer.keras")
    _unet(unet_channels).save(models_dir / "unet.keras")


def _save_data(prepared: Path) -> None:
    """Prepared sets in the layout of cnnpipe.data.prepared (train = test: only test is scored)."""
    rng = np.random.default_rng(0)
    cls, scn = prepared / "classification", prepared / "scenes"
    masks = np.zeros((N, 64, 64), np.uint8)
    masks[:, 10:40, 20:50] = 1
    labels = (np.arange(N) % 10).astype(np.uint8)
    arrays = {
        cls: {"images": rng.integers(0, 256, (N, 28, 28, 1), dtype=np.uint8), "labels": labels},
        scn: {"images": rng.integers(0, 256, (N, 64, 64, 1), dtype=np.uint8), "labels": labels, "masks": masks,
              "boxes": np.tile([20 / 64, 10 / 64, 30 / 64, 30 / 64], (N, 1)).astype(np.float32)},
    }
    for directory, named in arrays.items():
        for split in ("train", "test"):
            for name, array in named.items():
                save_array(directory / f"{split}_{name}.npy", array)
    write_json(cls / "meta.json", {"class_names": NAMES})
    write_json(scn / "meta.json", {"class_names": NAMES, "canvas": 64})


def _params(tmp: Path, multiclass: bool = False) -> Path:
    paths = {k: str(tmp / k) for k in ("raw", "prepared", "models", "metrics", "plots", "reports")}
    return write_params(tmp / "params.yaml", {
        "paths": paths,
        "transfer": {"backbone": "classifier", "labels_per_class": 5},
        "train_unet": {"multiclass": multiclass},
        "evaluate": {"gradcam_examples": 4, "overlay_examples": 6},
    })


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    _save_models(tmp / "models")
    _save_data(tmp / "prepared")
    return tmp


def _in_unit(value: float) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


# --------------------------------------------------------------------------------------
# The stage, as DVC runs it
# --------------------------------------------------------------------------------------


def test_stage_writes_every_metric_and_plot(project):
    params = _params(project)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["python", "-m", "stages.evaluate", "--params", str(params)],
        check=False, cwd=project, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    met = project / "metrics"
    clf = read_json(met / "classifier.json")
    assert set(clf) == {"accuracy", "per_class", "macro_f1", "n_test"}
    assert clf["n_test"] == N and _in_unit(clf["accuracy"]) and _in_unit(clf["macro_f1"])
    assert set(clf["per_class"]) == set(NAMES)
    for row in clf["per_class"].values():
        assert set(row) == {"precision", "recall", "f1", "support"}
        assert all(_in_unit(row[k]) for k in ("precision", "recall", "f1"))
    assert sum(row["support"] for row in clf["per_class"].values()) == N

    tr = read_json(met / "transfer.json")
    assert set(tr) == {"scratch", "feature_extraction", "fine_tuning", "backbone", "labels_per_class",
                       "gain_feature_extraction", "gain_fine_tuning"}
    assert all(_in_unit(tr[m]["accuracy"]) for m in TRANSFER_VARIANTS)
    assert tr["backbone"] == "classifier" and tr["labels_per_class"] == 5
    # Gains are differences of accuracies: in [-1, 1], and exactly consistent with them.
    assert tr["gain_fine_tuning"] == pytest.approx(tr["fine_tuning"]["accuracy"] - tr["scratch"]["accuracy"])
    assert -1.0 <= tr["gain_feature_extraction"] <= 1.0

    loc = read_json(met / "localizer.json")
    assert set(loc) == {"mean_iou", "iou50_rate", "class_accuracy", "n_test"}
    assert loc["n_test"] == N and all(_in_unit(loc[k]) for k in ("mean_iou", "iou50_rate", "class_accuracy"))

    seg = read_json(met / "unet.json")
    assert {"dice", "iou", "pixel_accuracy", "per_class", "mean_dice"} <= set(seg)
    assert all(_in_unit(seg[k]) for k in ("dice", "iou", "pixel_accuracy", "mean_dice"))
    assert set(seg["per_class"]) == {"background", "item"}
    assert all(_in_unit(v) for row in seg["per_class"].values() for v in row.values())

    # Each task's figures in its own folder (the stage's DVC output), transfer's too.
    figs = project / "plots" / "evaluate"
    assert {p.name: sorted(f.name for f in p.iterdir()) for p in figs.iterdir()} == {
        "classifier": ["confusion.csv", "confusion.png", "gradcam.png"],
        "transfer": ["accuracy.png", "confusion.csv", "confusion.png"],
        "localizer": ["boxes.png"],
        "unet": ["masks.png"],
    }
    for png in figs.glob("*/*.png"):
        assert png.read_bytes().startswith(b"\x89PNG"), png
    for task in ("classifier", "transfer"):  # header + one row per example
        assert len((figs / task / "confusion.csv").read_text().splitlines()) == N + 1, task


def test_stage_with_task_scores_only_that_task(project, tmp_path):
    from cnnpipe.stage_shell import run_task_stage
    from stages.evaluate import main

    params = _params(tmp_path)
    for name in ("models", "prepared"):
        (tmp_path / name).symlink_to(project / name)
    run_task_stage("evaluate", main, tuple(TASKS), ["--params", str(params), "--task", "unet"])
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["unet.json"]
    assert sorted(p.name for p in (tmp_path / "plots" / "evaluate").iterdir()) == ["unet"]
    assert sorted(p.name for p in (tmp_path / "plots" / "evaluate" / "unet").iterdir()) == ["masks.png"]
    with pytest.raises(SystemExit) as exc:  # argparse: the choices are the tasks
        run_task_stage("evaluate", main, tuple(TASKS), ["--params", str(params), "--task", "nope"])
    assert exc.value.code == 2


def test_stage_names_the_missing_model_and_its_stage(tmp_path, capsys):
    from cnnpipe.stage_shell import run_task_stage
    from stages.evaluate import main

    params = _params(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(SystemExit) as exc:
        run_task_stage("evaluate", main, tuple(TASKS), ["--params", str(params)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "stage evaluate@classifier failed" in err and "classifier.keras" in err and "train_classifier" in err
    with pytest.raises(SystemExit):
        run_task_stage("evaluate", main, tuple(TASKS), ["--params", str(params), "--task", "transfer"])
    err = capsys.readouterr().err
    assert "stage evaluate@transfer failed" in err and "scratch.keras" in err and "'transfer'" in err


# --------------------------------------------------------------------------------------
# Library functions
# --------------------------------------------------------------------------------------


def test_load_models_errors_name_file_and_stage(tmp_path):
    with pytest.raises(ModelError, match=r"classifier\.keras.*train_classifier"):
        ev.load_models(tmp_path)
    _save_models(tmp_path)
    (tmp_path / "transfer" / "fine_tuning.keras").unlink()
    with pytest.raises(ModelError, match=r"fine_tuning\.keras.*transfer"):
        ev.load_models(tmp_path)
    (tmp_path / "transfer" / "fine_tuning.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"fine_tuning\.keras.*not a loadable"):
        ev.load_models(tmp_path)
    (tmp_path / "transfer" / "fine_tuning.keras").unlink()
    _save_models(tmp_path)
    assert set(ev.load_models(tmp_path)) == set(PRODUCERS)
    assert set(ev.load_models(tmp_path, "transfer")) == {f"transfer/{m}.keras" for m in TRANSFER_VARIANTS}
    (tmp_path / "classifier.keras").unlink()
    assert set(ev.load_models(tmp_path, "unet")) == {"unet.keras"}  # another task's model is not read


def test_stage_names_missing_test_data_and_prepare(project, tmp_path, capsys):
    from cnnpipe.stage_shell import run_task_stage
    from stages.evaluate import main

    params = _params(tmp_path)
    (tmp_path / "models").symlink_to(project / "models")
    with pytest.raises(SystemExit):
        run_task_stage("evaluate", main, tuple(TASKS), ["--params", str(params), "--task", "classifier"])
    err = capsys.readouterr().err
    assert "classification/meta.json: missing" in err and "prepare" in err


def test_evaluate_unet_multiclass_per_class_names_and_ground_truth():
    import keras

    # A "U-Net" that always answers class 3 (channel 4) everywhere: the truth is known exactly.
    inp = keras.Input((64, 64, 1))
    zeros = keras.layers.Conv2D(11, 1, kernel_initializer="zeros", bias_initializer="zeros")(inp)
    bias = np.zeros(11, np.float32)
    bias[4] = 5.0
    out = keras.layers.Softmax()(keras.layers.Lambda(lambda t: t + bias)(zeros))
    model = keras.Model(inp, out)
    images = np.zeros((2, 64, 64, 1), np.uint8)
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[:, :32, :] = 1  # the item covers the top half
    labels = np.array([3, 5], np.uint8)
    res, pred = ev.evaluate_unet(model, images, masks, labels, True, NAMES)
    assert pred.shape == (2, 64, 64) and (pred == 4).all()
    assert set(res["per_class"]) == {"background", *NAMES}
    # Foreground everywhere vs top half: Dice 2*0.5/(1+0.5) = 2/3, IoU 1/2, pixel accuracy 1/2.
    assert res["dice"] == pytest.approx(2 / 3) and res["iou"] == pytest.approx(0.5)
    assert res["pixel_accuracy"] == pytest.approx(0.5)
    # class c3 (label 3): truth = image 0's top half (2048 px), predicted 8192 px -> Dice 2*2048/10240.
    assert res["per_class"]["c3"]["dice"] == pytest.approx(0.4)
    assert res["per_class"]["c5"] == {"dice": 0.0, "iou": 0.0}  # present, never predicted
    assert res["per_class"]["background"]["dice"] == 0.0  # never predicted
    assert res["per_class"]["c0"] == {"dice": 1.0, "iou": 1.0}  # absent on both sides


def test_unet_channels_must_match_the_multiclass_param():
    model = _unet(1)
    with pytest.raises(ModelError, match="multiclass"):
        ev.predict_unet_labels(model, np.zeros((1, 64, 64, 1), np.uint8), multiclass=True)


def test_localizer_must_output_class_and_box():
    with pytest.raises(ModelError, match="'class' and 'box'"):
        ev.predict_localizer(_scene_classifier(), np.zeros((1, 64, 64, 1), np.uint8))


def test_predict_batches_covers_every_row_once():
    model = _scene_classifier()
    images = np.random.default_rng(0).integers(0, 256, (7, 64, 64, 1), dtype=np.uint8)
    batched = ev.predict_classes(model, images, batch_size=3)
    whole = np.argmax(model.predict_on_batch(images.astype(np.float32) / 255.0), axis=-1)
    np.testing.assert_array_equal(batched, whole)


def test_every_task_of_the_task_table_has_an_evaluator():
    from cnnpipe.evaluation.tasks import EVALUATORS

    assert list(EVALUATORS) == list(TASKS)
