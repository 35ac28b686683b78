"""End to end against a real MLflow server: the register stage on a tiny project (tiny stand-in
Keras models), then the ``cnnpipe`` commands: lineage, predict, promote, rollback, schedule.

The module fixture registers three rounds: all four models (each becomes @champion), a worse
classifier (refused), a better one (promoted; the first becomes @previous). Tests read that
state over the server's REST API; the mutating CLI tests come last.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import write_params
from mlflow_server import mlflow_server  # noqa: F401  (fixture)

import pipelines.schedules  # noqa: F401  (see below)
from cnnpipe import cli
from cnnpipe.config import load_params
from cnnpipe.io import read_json, save_array, write_json
from cnnpipe.tracking.runs import ENV_FLOW_RUN, ENV_PARENT_RUN

# Imported above, at collection: Prefect's import re-configures logging, which closes every
# existing handler, and absl's (TensorFlow's) then closes pytest's capture stream if the first
# Prefect import happens inside a capsys test.

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SCENE = 32  # tiny scenes: the models don't care about the canvas size
LOCK = {"classification": "1111111111111111aaaaaaaaaaaaaaaa.dir", "scenes": "2222222222222222bbbbbbbbbbbbbbbb.dir"}
CLASSIFIER = "cnnpipe-classifier"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def tiny_models() -> dict[str, Any]:
    """Four stand-ins with the real models' input/output contracts, each trained one step."""
    import keras

    rng = np.random.default_rng(0)

    def conv(side: int) -> tuple[Any, Any]:
        inputs = keras.Input((side, side, 1), name="image")
        return inputs, keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)

    def classifier(side: int) -> Any:
        inputs, x = conv(side)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))

    inputs, x = conv(SCENE)
    flat = keras.layers.Flatten()(x)
    localizer = keras.Model(inputs, {"class": keras.layers.Dense(10, activation="softmax", name="class")(flat),
                                     "box": keras.layers.Dense(4, activation="sigmoid", name="box")(flat)})
    inputs, x = conv(SCENE)
    unet = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))

    models = {"classifier.keras": classifier(28), "transfer/fine_tuning.keras": classifier(SCENE),
              "localizer.keras": localizer, "unet.keras": unet}
    labels = rng.integers(0, 10, 4)
    targets = {
        "classifier.keras": labels, "transfer/fine_tuning.keras": labels,
        "localizer.keras": {"class": labels, "box": rng.random((4, 4), dtype=np.float32)},
        "unet.keras": (rng.random((4, SCENE, SCENE, 1)) > 0.5).astype(np.float32),
    }
    for name, model in models.items():
        side = model.input_shape[1]
        loss = ({"class": "sparse_categorical_crossentropy", "box": "mse"} if name == "localizer.keras"
                else "binary_crossentropy" if name == "unet.keras" else "sparse_categorical_crossentropy")
        model.compile("adam", loss)
        model.fit(rng.random((4, side, side, 1), dtype=np.float32), targets[name], epochs=1, batch_size=4, verbose=0)
    return models


def write_project(root: Path, server_url: str) -> None:
    rng = np.random.default_rng(1)
    write_params(root / "params.yaml", {
        "tracking": {"uri": server_url, "experiment": "cli-e2e"},
        "register": {"min_accuracy": 0.3, "min_transfer_accuracy": 0.3, "min_mean_iou": 0.1, "min_dice": 0.1},
    })
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  prepare:\n    cmd: python -m stages.prepare\n    outs:\n" + "".join(
        f"    - path: data/prepared/{d}\n      hash: md5\n      md5: {h}\n" for d, h in LOCK.items()))
    cls, scn = root / "data/prepared/classification", root / "data/prepared/scenes"
    save_array(cls / "test_images.npy", rng.integers(0, 256, (6, 28, 28, 1)).astype(np.uint8))
    save_array(cls / "test_labels.npy", rng.integers(0, 10, 6).astype(np.uint8))
    save_array(scn / "test_images.npy", rng.integers(0, 256, (6, SCENE, SCENE, 1)).astype(np.uint8))
    save_array(scn / "test_labels.npy", rng.integers(0, 10, 6).astype(np.uint8))
    for d in (cls, scn):
        write_json(d / "meta.json", {"class_names": NAMES})
    from cnnpipe.training.outputs import save_model

    for name, model in tiny_models().items():
        save_model(model, root / "models" / name)
    write_json(root / "metrics/classifier.json", {"accuracy": 0.6, "macro_f1": 0.5})
    write_json(root / "metrics/transfer.json", {"fine_tuning": {"accuracy": 0.5}, "scratch": {"accuracy": 0.4}})
    write_json(root / "metrics/localizer.json", {"mean_iou": 0.4, "iou50_rate": 0.3})
    write_json(root / "metrics/unet.json", {"dice": 0.5, "iou": 0.4})


def register_round(root: Path, message: str) -> dict[str, Any]:
    """Commit the project as it is, run every register@<task> stage, return task -> its decision."""
    from cnnpipe.taskspec import TASKS
    from stages.register import main

    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    params = load_params(root / "params.yaml")
    for task in TASKS.values():
        main(params, task.key)
    return {"commit": git(root, "rev-parse", "HEAD"),
            **{t.key: read_json(root / f"metrics/register/{t.key}.json") for t in TASKS.values()}}



@contextlib.contextmanager
def registry_project(tmp_path_factory, name: str, server_url: str) -> Iterator[Path]:
    """A fresh git project using ``server_url`` for tracking, the current directory while inside,
    with no inherited tracking URI, parent run or flow run."""
    root = tmp_path_factory.mktemp(name) / "proj"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", ENV_PARENT_RUN, ENV_FLOW_RUN):
            mp.delenv(var, raising=False)
        mp.chdir(root)
        git(root, "init", "-q")
        write_project(root, server_url)
        yield root

@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_server) -> dict[str, Any]:  # noqa: F811
    with registry_project(tmp_path_factory, "cli", mlflow_server.url) as root:
        rounds = [register_round(root, "all four models")]
        write_json(root / "metrics/classifier.json", {"accuracy": 0.5, "macro_f1": 0.4})
        for name in ("transfer/fine_tuning.keras", "localizer.keras", "unet.keras"):
            (root / "models" / name).rename(root / f"{Path(name).name}.kept")
        rounds.append(register_round(root, "a worse classifier"))
        write_json(root / "metrics/classifier.json", {"accuracy": 0.7, "macro_f1": 0.6})
        rounds.append(register_round(root, "a better classifier"))
        for name in ("transfer/fine_tuning.keras", "localizer.keras", "unet.keras"):
            (root / f"{Path(name).name}.kept").rename(root / "models" / name)
        yield {"root": root, "rounds": rounds}


def aliases(server, name: str) -> dict[str, str]:
    model = server.get("registered-models/get", name=name)["registered_model"]
    return {a["alias"]: a["version"] for a in model.get("aliases", [])}


def version(server, name: str, number: str) -> dict[str, Any]:
    got = server.get("model-versions/get", name=name, version=number)["model_version"]
    got["tags"] = {t["key"]: t["value"] for t in got.get("tags", [])}
    return got


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------
# The register stage, checked over HTTP
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), [
    (CLASSIFIER, [-1, 28, 28, 1]), ("cnnpipe-transfer", [-1, SCENE, SCENE, 1]),
    ("cnnpipe-localizer", [-1, SCENE, SCENE, 1]), ("cnnpipe-unet", [-1, SCENE, SCENE, 1]),
])
def test_versions_are_registered_with_signature_and_input_example(project, mlflow_server, name, shape):  # noqa: F811
    assert project["rounds"][0][name.removeprefix("cnnpipe-")]["promoted"] is True
    v1 = version(mlflow_server, name, "1")
    model_id = v1["source"].removeprefix("models:/")
    logged = mlflow_server.get(f"logged-models/{model_id}")["model"]["info"]
    location = logged["artifact_uri"].removeprefix("mlflow-artifacts:/")
    mlmodel = yaml.safe_load(mlflow_server.artifact(f"{location}/MLmodel"))
    # Any batch of uint8 images (the model resizes and converts them); a pyfunc with its code.
    assert json.loads(mlmodel["signature"]["inputs"]) == [
        {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, -1, -1, -1]}}]
    assert mlmodel["signature"]["outputs"] and mlmodel["flavors"]["python_function"]["code"] == "code"
    assert mlmodel["metadata"]["class_names"] == NAMES
    assert mlmodel["saved_input_example_info"]["artifact_path"] == "input_example.json"
    example = np.asarray(json.loads(mlflow_server.artifact(f"{location}/input_example.json")))
    assert example.shape[1:] == tuple(shape[1:]) and example.min() >= 0 and example.max() <= 255
    assert example.dtype.kind == "i"  # pixels, not floats: what a client sends
    assert v1["tags"]["cnnpipe.class_names"] == json.dumps(NAMES) and v1["run_id"] == logged["source_run_id"]


def test_a_task_without_its_model_file_is_skipped(project):
    second = project["rounds"][1]
    assert second["localizer"] == {"name": "cnnpipe-localizer", "skipped": "models/localizer.keras not found"}


def test_a_worse_challenger_is_refused_with_its_reason(project, mlflow_server):  # noqa: F811
    decision = project["rounds"][1]["classifier"]
    assert decision["version"] == "2" and decision["promoted"] is False
    assert "accuracy 0.5000 does not beat the champion's 0.6000" in decision["reason"]
    v2 = version(mlflow_server, CLASSIFIER, "2")
    assert v2["tags"]["cnnpipe.decision"] == "refused"
    assert v2["tags"]["cnnpipe.decision.reason"] == decision["reason"]
    assert decision["reason"] in v2["description"]


def test_a_better_challenger_becomes_champion_and_the_old_one_previous(project, mlflow_server):  # noqa: F811
    assert project["rounds"][2]["classifier"]["promoted"] is True
    assert aliases(mlflow_server, CLASSIFIER) == {"champion": "3", "previous": "1"}
    assert version(mlflow_server, CLASSIFIER, "1")["tags"]["cnnpipe.decision"] == "demoted"


def test_lineage_prints_commit_data_hashes_runs_and_history(project, mlflow_server, capsys):  # noqa: F811
    rc, out, _ = run_cli(capsys, "lineage", f"{CLASSIFIER}@champion")
    v3 = version(mlflow_server, CLASSIFIER, "3")
    assert rc == 0 and out.startswith(f"{CLASSIFIER} version 3 @champion")
    assert f"git commit:       {project['rounds'][2]['commit']} (dirty: false)" in out
    assert f"test_data    md5:{LOCK['classification']}" in out
    assert f"MLflow run:       {v3['run_id']}" in out
    assert "train_classifier.filters = [32, 64, 128]" in out
    assert "promoted by register stage" in out
    rc, out, _ = run_cli(capsys, "lineage", f"{CLASSIFIER}/1", "--json")
    info = json.loads(out)
    assert info["git_commit"] == project["rounds"][0]["commit"] and info["aliases"] == ["previous"]
    assert info["dvc"]["test_data"] == f"md5:{LOCK['classification']}"
    assert [e["event"] for e in info["history"]] == ["registered", "promoted", "demoted"]


def test_predict_through_the_registry_matches_the_local_models(project, capsys, tmp_path):
    from PIL import Image

    from cnnpipe.data.images import open_image
    from cnnpipe.serving.predict import predict_image
    from cnnpipe.training.outputs import load_model

    root = project["root"]
    x = np.load(root / "data/prepared/classification/test_images.npy")
    scene = np.load(root / "data/prepared/scenes/test_images.npy")
    item, canvas = tmp_path / "item.png", tmp_path / "scene.png"
    Image.fromarray(x[0, :, :, 0]).save(item)
    Image.fromarray(scene[0, :, :, 0]).resize((96, 80)).save(canvas)  # not the model's size

    for name, kind, model_file, path in [
        (CLASSIFIER, "class", "classifier.keras", item),
        ("cnnpipe-localizer", "box", "localizer.keras", canvas),
    ]:
        local = load_model(root / "models" / model_file, "test")
        expected = predict_image(local, kind, NAMES, path, open_image(path))
        rc, out, _ = run_cli(capsys, "predict", name, str(path))
        assert rc == 0 and out.strip() == str(expected)
    assert " box x=" in out and out.strip().endswith(" px")

    rc, out, _ = run_cli(capsys, "predict", "cnnpipe-unet@champion", str(canvas))
    mask_file = tmp_path / "scene.png.mask.png"
    assert rc == 0 and out.startswith(f"{canvas}: mask -> {mask_file}")
    from_registry = np.asarray(Image.open(mask_file))
    local = load_model(root / "models" / "unet.keras", "test")
    predict_image(local, "mask", NAMES, canvas, open_image(canvas), force=True)
    assert from_registry.shape == (80, 96) and np.array_equal(np.asarray(Image.open(mask_file)), from_registry)


def test_predict_rejects_a_directory_and_a_non_image(project, capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    rc, _, err = run_cli(capsys, "predict", CLASSIFIER, str(tmp_path))
    assert rc == 1 and f"{tmp_path}: is a directory; give image files" in err
    rc, _, err = run_cli(capsys, "predict", CLASSIFIER, str(text))
    assert rc == 1 and f"{text}: not a readable image (" in err
    rc, _, err = run_cli(capsys, "predict", "cnnpipe-classifier@nope", str(text))
    assert rc == 1 and "has no @nope version" in err
    rc, _, err = run_cli(capsys, "predict", "cnnpipe-clasifier", str(text))  # misspelt: named as such
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "cnnpipe-clasifier: no registered model named 'cnnpipe-clasifier' (registered: " in err
    assert CLASSIFIER in err and "@champion" not in err


def test_predict_outside_a_project_names_the_missing_store_and_creates_none(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(tmp_path / "params.yaml")
    Image.new("L", (8, 8), 128).save(tmp_path / "x.png")
    rc, _, err = run_cli(capsys, "predict", CLASSIFIER, str(tmp_path / "x.png"))
    assert rc == 1 and f"no tracking store at {tmp_path.resolve()}/mlflow.db" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "x.png"]


def test_schedule_dry_run_prints_the_next_run_times(capsys):
    rc, out, _ = run_cli(capsys, "schedule", "--cron", "0 3 * * *", "--dry-run", "--count", "2")
    lines = out.split()
    assert rc == 0 and len(lines) == 2 and all("T03:00:00" in line for line in lines)
    rc, _, err = run_cli(capsys, "schedule", "--cron", "61 * * * *", "--dry-run")
    assert rc == 1 and "invalid schedule cron='61 * * * *'" in err


def test_ui_names_the_server_when_runs_are_remote(project, mlflow_server, capsys):  # noqa: F811
    rc, out, _ = run_cli(capsys, "ui")
    assert rc == 0 and f"runs are tracked at {mlflow_server.url}" in out


# --------------------------------------------------------------------------------------
# Mutating: rollback and promote from the command line (keep last)
# --------------------------------------------------------------------------------------


def test_rollback_restores_the_previous_champion(project, mlflow_server, capsys):  # noqa: F811
    rc, out, _ = run_cli(capsys, "rollback", CLASSIFIER)
    assert rc == 0 and "version 1 is @champion again (was version 3)" in out
    assert aliases(mlflow_server, CLASSIFIER) == {"champion": "1"}
    assert version(mlflow_server, CLASSIFIER, "3")["tags"]["cnnpipe.decision"] == "rolled_back"


def test_promote_refuses_through_the_gate_and_force_is_recorded(project, mlflow_server, capsys):  # noqa: F811
    rc, out, _ = run_cli(capsys, "promote", CLASSIFIER, "--version", "3")
    assert rc == 0 and "version 3 is @champion: accuracy 0.7000 beats the champion's 0.6000" in out
    rc, _, err = run_cli(capsys, "promote", CLASSIFIER, "--version", "2")
    assert rc == 1 and "not promoted: accuracy 0.5000 does not beat the champion's 0.7000" in err
    rc, out, _ = run_cli(capsys, "promote", CLASSIFIER, "--version", "2", "--force")
    assert rc == 0 and "version 2 is @champion: forced by" in out
    assert aliases(mlflow_server, CLASSIFIER) == {"champion": "2", "previous": "3"}
    run_cli(capsys, "rollback", CLASSIFIER)
    assert aliases(mlflow_server, CLASSIFIER) == {"champion": "3", "previous": "1"}
