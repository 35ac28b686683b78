"""Registered models are MLflow models to anyone (issue 18): plain ``mlflow.pyfunc.load_model``
and ``mlflow models serve`` answer raw uint8 images outside the project, with the ``cnnpipe``
code (custom layers) shipped inside each model, and with the preprocessing training used.

Four small real cnnpipe architectures (the localizer's and the transfer model's custom layers
included) are registered by the real register stage against a real MLflow server; the loading
and serving happen in other processes whose working directory is outside the project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow_server import (
    free_port,
    mlflow_server,  # noqa: F401  (fixture)
)
from PIL import Image
from serving.test_cli import NAMES, SCENE, git, registry_project

from cnnpipe.config import load_params
from cnnpipe.data.images import to_model_input
from cnnpipe.serving.pyfunc import ImageModel, to_images
from cnnpipe.tracking.runs import ENV_FLOW_RUN, ENV_PARENT_RUN

PREFIX = "pyfunc-"  # own names: the server is shared with the other serving tests
TASKS = {"classifier": ("class", 28), "transfer": ("class", SCENE), "localizer": ("box", SCENE),
         "unet": ("mask", SCENE)}


def real_models() -> dict[str, Any]:
    """Small models built by cnnpipe's own builders (random weights: the answers are compared,
    not judged); the transfer stand-in carries the transfer model's custom GrayToRGB layer."""
    import keras

    from cnnpipe.models.backbone import build_backbone
    from cnnpipe.models.classifier import build_classifier
    from cnnpipe.models.localizer import build_localizer
    from cnnpipe.models.transfer import GrayToRGB
    from cnnpipe.models.unet import build_unet

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SCENE, SCENE, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(GrayToRGB(name="gray_to_rgb")(inputs))
    transfer = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    return {
        "classifier.keras": build_classifier((28, 28, 1), 10, [4, 8], 1, 0.0),
        "transfer/fine_tuning.keras": transfer,
        "localizer.keras": build_localizer(build_backbone([4, 8], 1), (SCENE, SCENE, 1), 10, 0.0, head_width=8),
        "unet.keras": build_unet((SCENE, SCENE, 1), [4, 8], 1),
    }


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mlflow_server) -> dict[str, Any]:  # noqa: F811
    """A project whose four models are registered (each @champion); its root and the models."""
    from cnnpipe.training.outputs import save_model
    from stages.register import main

    with registry_project(tmp_path_factory, "pyfunc", mlflow_server.url) as root:
        models = real_models()
        for name, model in models.items():
            save_model(model, root / "models" / name)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["register"].update({f"{task}_name": f"{PREFIX}{task}" for task in TASKS})
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git(root, "add", "-A")
        git(root, "commit", "-qm", "small real models")
        for task in TASKS:
            main(load_params(root / "params.yaml"), task)
        yield {"root": root, "models": {n.split("/")[0].removesuffix(".keras"): m for n, m in models.items()}}


def outside_env(server_url: str) -> dict[str, str]:
    """A process that knows only the server: no PYTHONPATH, no project on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", ENV_PARENT_RUN, ENV_FLOW_RUN)}
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # an activated venv: uvicorn
    return {**env, "PATH": path, "MLFLOW_TRACKING_URI": server_url, "TF_CPP_MIN_LOG_LEVEL": "3"}


def batch(side: int, n: int = 3) -> np.ndarray:
    """uint8 gray images NOT of the model's size (the model resizes them like prepare does)."""
    return np.random.default_rng(side).integers(0, 256, (n, side + 5, side + 9, 1), dtype=np.uint8)


def expected(model: Any, kind: str, images: np.ndarray) -> Any:
    """The served answers computed here, from the local Keras model, by the same class."""
    served = ImageModel().configure(kind, NAMES, model.input_shape)
    served.model = model
    return served.predict(None, images)


# Run from /tmp with cnnpipe made unimportable: the editable install's finder removed, the
# project off sys.path. Loading must then find cnnpipe in the model's own code/ folder.
LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in repr(h).lower()]
    sys.path[:] = [p for p in sys.path if p not in ("", ".", {repo!r})]
    sys.path_importer_cache.clear()
    try:
        import cnnpipe
        sys.exit("cnnpipe is importable before loading: " + cnnpipe.__file__)
    except ImportError:
        pass
    import mlflow.pyfunc
    import numpy as np

    out = {{}}
    for name, images in json.load(open(sys.argv[1])).items():
        model = mlflow.pyfunc.load_model(f"models:/{{name}}@champion")
        answer = model.predict(np.asarray(images, dtype=np.uint8))
        out[name] = answer.tolist() if isinstance(answer, np.ndarray) else answer.to_dict("list")
    import cnnpipe
    out["cnnpipe"] = cnnpipe.__file__
    print("RESULT " + json.dumps(out))
""")


def test_plain_mlflow_loads_every_task_outside_the_project_with_the_code_inside_the_model(
        registered, mlflow_server, tmp_path):  # noqa: F811
    repo = str(Path(__file__).resolve().parents[2])
    inputs = {f"{PREFIX}{task}": batch(side).tolist() for task, (_, side) in TASKS.items()}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    (tmp_path / "load.py").write_text(LOAD_SCRIPT.format(repo=repo))
    proc = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "inputs.json")],
                          cwd=tmp_path, env=outside_env(mlflow_server.url), capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
    got = json.loads(line.removeprefix("RESULT "))
    assert not got.pop("cnnpipe").startswith(repo)  # loaded from the model's code/ folder
    for task, (kind, side) in TASKS.items():
        answer, want = got[f"{PREFIX}{task}"], expected(registered["models"][task], kind, batch(side))
        if kind == "mask":
            assert np.asarray(answer).shape == (3, side + 5, side + 9)
            np.testing.assert_array_equal(np.asarray(answer), want)
            continue
        assert answer["class"] == list(want["class"]) and set(answer["class"]) <= set(NAMES)
        np.testing.assert_allclose(answer["probabilities"], np.stack(want["probabilities"]), atol=1e-5)
        if kind == "box":  # pixels of the 37x41 input, not fractions
            assert answer["w"] == list(want["w"]) and all(0 <= x <= side + 9 for x in answer["x"])


def test_mlflow_models_serve_answers_a_posted_image(registered, mlflow_server, tmp_path):  # noqa: F811
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{PREFIX}localizer@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=outside_env(mlflow_server.url), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 300 s"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        image = batch(SCENE, n=1)
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": image.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as resp:
            (answer,) = json.load(resp)["predictions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    want = expected(registered["models"]["localizer"], "box", image).iloc[0]
    assert answer["class"] == want["class"] and answer["class"] in NAMES
    assert [answer[k] for k in "xywh"] == [want[k] for k in "xywh"]
    assert answer["probability"] == pytest.approx(want["probability"], abs=1e-5)


def test_encoded_files_and_base64_text_are_decoded_like_prepare_decodes_them(tmp_path):
    """The model also takes image files' bytes (PNG, JPEG) and base64 text of them: decoded by
    the one decoder, so a PNG of an array answers exactly like the array."""
    import base64
    import io

    pixels = batch(28, n=2)
    encoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    served = ImageModel().configure("class", NAMES, (None, 28, 28, 1))
    from_arrays = served.model_input(to_images(pixels))
    np.testing.assert_array_equal(served.model_input(to_images(encoded)), from_arrays)
    np.testing.assert_array_equal(served.model_input(to_images([base64.b64encode(b).decode() for b in encoded])),
                                  from_arrays)
    rgb = np.random.default_rng(1).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8)
    gray = ImageModel().configure("class", NAMES, (None, 20, 20, 1)).model_input(to_images(rgb))
    np.testing.assert_array_equal(gray[0, ..., 0], to_model_input(np.asarray(Image.fromarray(rgb[0]).convert("L"))))


def test_an_rgb_folder_dataset_is_prepared_as_the_served_model_reads_it(tmp_path):
    """Prepare's pixels of each file of an RGB class-folder dataset equal what the served model
    feeds its network for the same file's bytes."""
    from helpers import section

    from cnnpipe.data.formats.folders import read_class_folders

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "rgb" / split / label
            folder.mkdir(parents=True)
            for k, ext in enumerate(("png", "jpg", "bmp")):
                Image.fromarray(rng.integers(0, 256, (23 + k, 31, 3), dtype=np.uint8)).save(folder / f"p{k}.{ext}")
    params = section("datasets.classification", format="folders", path=str(tmp_path / "rgb"), image_size=16,
                     channels=3)
    data = read_class_folders(params, seed=0)
    served = ImageModel().configure("class", ["a", "b"], (None, 16, 16, 3))
    rows = data.splits["train"].rows
    assert len(rows) == 6
    for prepared, row in zip(data.splits["train"].images, rows):
        fed = served.model_input(to_images([Path(row["file"]).read_bytes()]))
        assert prepared.shape == (16, 16, 3) and len(np.unique(prepared.reshape(-1, 3), axis=0)) > 16  # colour
        np.testing.assert_array_equal(fed[0], to_model_input(prepared))


def test_bad_inputs_are_one_line_naming_the_input():
    from cnnpipe.errors import DataError

    served = ImageModel().configure("class", NAMES, (None, 28, 28, 1))
    for bad, words in [(np.zeros((2, 8, 8), np.float32), "image 0: images are uint8 pixels"),
                       (np.zeros((2, 8), np.uint8), "a batch of images is N x H x W"),
                       (["not base64!"], "image 0: text input is read as a base64-encoded image"),
                       ([b"not an image"], "image 0: not a readable image")]:
        with pytest.raises(DataError, match=words) as raised:
            served.model_input(to_images(bad))
        assert "\n" not in str(raised.value)


def test_cnnpipe_predict_answers_like_the_served_model_and_says_which_backend_in_one_line(
        registered, mlflow_server, tmp_path):  # noqa: F811
    """The command, in the project, on a PNG: the served model's answer for the same pixels, and
    on stderr one line naming the backend and why (no warnings, no parity noise)."""
    image = batch(SCENE, n=1)
    Image.fromarray(image[0, ..., 0]).save(tmp_path / "scene.png")
    env = {**outside_env(mlflow_server.url), "CNNPIPE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI")  # the project's params.yaml names the server
    proc = subprocess.run([sys.executable, "-m", "cnnpipe.cli", "predict", f"{PREFIX}localizer",
                           str(tmp_path / "scene.png")], cwd=registered["root"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = expected(registered["models"]["localizer"], "box", image).iloc[0]
    box = " ".join(f"{k}={want[k]}" for k in "xywh")
    assert proc.stdout.strip() == f"{tmp_path / 'scene.png'}: {want['class']} (p={want['probability']:.3f}) box {box} px"
    lines = [s for s in proc.stderr.splitlines() if s.strip() and not s.startswith(("I0000", "WARNING: All log"))]
    (line,) = [s for s in lines if s.startswith("predicting with ")]
    print(line)
    assert line.startswith(("predicting with tflite (tflite: its outputs match Keras",
                            "predicting with keras (tflite: "))
    assert not [s for s in lines if "Warning" in s or "parity" in s or "Downloading" in s], lines
