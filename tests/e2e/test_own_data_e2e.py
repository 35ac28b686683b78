"""Own data through the real DVC pipeline: `dvc exp run -S datasets...` trains and evaluates
every task on the user's files, class names reach metrics and the registry, and changing one
task's dataset re-runs only that task's stages. Oxford-IIIT Pet comes from a local http.server."""

from __future__ import annotations

import json
import re
import sys

import pytest
import yaml
from helpers import write_tiny_idx_dataset
from own_data import (
    tar_directory,
    write_csv_boxes,
    write_oxford_pet,
    write_segmentation_folders,
)
from project import make_project, run

IDX_NAMES = [f"glyph{i}" for i in range(10)]


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    idx = tmp / "own-idx"
    # 28 px: the transfer stage reuses the classifier head on 28 px items (see the report).
    write_tiny_idx_dataset(idx, n_train=100, n_test=40, side=28, gz=True, seed=5)
    seg = write_segmentation_folders(tmp / "seg", n=18, n_classes=2)
    seg2 = write_segmentation_folders(tmp / "seg2", n=15, n_classes=2, seed=9)
    csv = write_csv_boxes(tmp / "csv", n=30)
    project = make_project(tmp)
    # Absolute paths: `dvc exp` may run in a temp copy of the project.
    out = run(["dvc", "exp", "run",
               "-S", "datasets.classification.format=idx", "-S", f"datasets.classification.path={idx}",
               "-S", f"++datasets.classification.class_names=[{','.join(IDX_NAMES)}]",
               "-S", "datasets.segmentation.format=folders", "-S", f"datasets.segmentation.path={seg}",
               "-S", "++datasets.segmentation.class_names=[shirt,pants]", "-S", "++datasets.segmentation.image_size=32",
               "-S", "datasets.localization.format=csv", "-S", f"datasets.localization.path={csv}",
               "-S", "++datasets.localization.image_size=32"], project).stdout
    return {"project": project, "first": out, "seg2": seg2}


def metrics(project, name):
    return json.loads((project / "metrics" / f"{name}.json").read_text())


def test_exp_run_trains_and_evaluates_every_task_on_own_data(own):
    project = own["project"]
    per_task = {f"{stage}@{task}" for stage in ("evaluate", "register")
                for task in ("classifier", "transfer", "localizer", "unet")}
    assert {"prepare", "prepare_classification", "train_classifier", "train_unet", "train_localizer",
            *per_task} <= ran(own["first"])
    meta = json.loads((project / "data/prepared/classification/meta.json").read_text())
    assert meta["format"] == "idx" and meta["image_shape"] == [28, 28, 1] and meta["class_names"] == IDX_NAMES
    clf = metrics(project, "classifier")
    assert set(clf["per_class"]) == set(IDX_NAMES) and clf["n_test"] == 40
    unet = metrics(project, "unet")
    assert set(unet["per_class"]) == {"background", "shirt", "pants"}
    assert 0 <= unet["mean_dice"] <= 1 and all(0 <= v["dice"] <= 1 for v in unet["per_class"].values())
    assert json.loads((project / "metrics/train/unet.json").read_text())["multiclass"] is True  # index masks
    loc = metrics(project, "localizer")
    assert loc["n_test"] == 6 and 0 <= loc["mean_iou"] <= 1
    assert (project / "data/prepared/folders/test_masks.npy").is_file()
    assert not (project / "data/prepared/folders/test_boxes.npy").exists()
    assert (project / "data/prepared/csv/train_boxes.npy").is_file()
    report = json.loads((project / "reports/folders_validation/results.json").read_text())
    assert report["success"] and report["observed"]["rows"] == 18 + 6
    assert (project / "reports/classification_validation/data_docs/index.html").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert any(d["path"] == "data/prepared/folders" for d in lock["train_unet"]["deps"])


def test_class_names_from_the_data_reach_the_registry(own):
    from mlflow.tracking import MlflowClient

    project = own["project"]
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    names = {m: json.loads(client.get_model_version(m, "1").tags["cnnpipe.class_names"])
             for m in ("cnnpipe-classifier", "cnnpipe-localizer", "cnnpipe-unet")}
    assert names == {"cnnpipe-classifier": IDX_NAMES, "cnnpipe-localizer": ["cup", "pen"],
                     "cnnpipe-unet": ["shirt", "pants"]}


def test_changing_one_tasks_dataset_reruns_only_that_task(own):
    project = own["project"]
    out = run(["dvc", "exp", "run", "-S", f"datasets.segmentation.path={own['seg2']}"], project).stdout
    # prepare rewrites the other tasks' data byte for byte, so DVC skips everything downstream
    # of it but the U-Net's training, evaluation and registration.
    # fingerprint re-reads the sources on every repro (always_changed); it re-runs nothing else.
    assert ran(out) == {"fingerprint", "prepare", "train_unet", "evaluate@unet", "register@unet"}, out
    assert metrics(project, "unet")["n_test"] == 5


def test_oxford_pet_tarball_by_url_through_the_prepare_stage(tmp_path, http_dir):
    www, base = http_dir
    tar_directory(write_oxford_pet(tmp_path / "pets"), www / "oxford-pet.tar.gz")
    project = make_project(tmp_path, overrides={"datasets": {
        "localization": {"format": "oxford_pet", "url": f"{base}/oxford-pet.tar.gz", "image_size": 32},
        "segmentation": {"format": "oxford_pet", "url": f"{base}/oxford-pet.tar.gz", "image_size": 32},
    }})
    run(["dvc", "repro", "prepare"], project)
    pets = project / "data/prepared/oxford_pet"
    meta = json.loads((pets / "meta.json").read_text())
    assert meta["class_names"] == ["cat", "dog"] and meta["counts"]["test"] == 4
    assert {"test_boxes.npy", "test_masks.npy", "train_images.npy"} <= {p.name for p in pets.iterdir()}
    assert json.loads((project / "reports/oxford_pet_validation/results.json").read_text())["success"]
    # A broken own dataset fails the stage with the file named, and writes no data.
    bad = yaml.safe_load((project / "params.yaml").read_text())
    bad["datasets"]["segmentation"].update(format="folders", path=str(tmp_path / "nowhere"), url=None)
    (project / "params.yaml").write_text(yaml.safe_dump(bad))
    proc = run([sys.executable, "-m", "stages.prepare"], project, check=False)
    assert proc.returncode == 1 and f"{tmp_path / 'nowhere'}: segmentation folders" in proc.stderr
    assert not (project / "data/prepared/folders").exists()
