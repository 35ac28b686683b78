"""Tracking at the stage edge: URI resolution, fast failure on a dead server, lineage tags,
no credentials anywhere, per-epoch metrics and model signatures (against a real server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import params_with, section
from mlflow_server import free_port, mlflow_server  # noqa: F401  (fixture)

from cnnpipe.config import ParamsError
from cnnpipe.io import sha256_file
from cnnpipe.tracking.connection import (
    TrackingUnavailable,
    connect,
    embedded_uri,
    resolve_uri,
)
from cnnpipe.tracking.lineage import store_root
from cnnpipe.tracking.runs import ENV_FLOW_RUN, ENV_PARENT_RUN, stage_run

LOCK_MD5 = "0123456789abcdef0123456789abcdef.dir"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                ENV_PARENT_RUN, ENV_FLOW_RUN):
        monkeypatch.setenv(var, "")  # records the original, so whatever the test sets is undone
        monkeypatch.delenv(var)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def tiny_project(root: Path, params: str) -> Path:
    """A committed git project: dvc.yaml, params.yaml, a dvc.lock naming one data directory."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(params)
    (root / "data" / "prepared").mkdir(parents=True)
    (root / "data" / "prepared" / "x.npy").write_bytes(b"prepared bytes")
    (root / "data" / "extra.bin").write_bytes(b"not in dvc.lock")
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    cmd: true\n    outs:\n"
        f"    - path: data/prepared\n      hash: md5\n      md5: {LOCK_MD5}\n"
    )
    git(root, "init", "-q")
    git(root, "remote", "add", "origin", "https://user:s3cret@git.example.com/team/repo.git")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "tiny project")
    return root


# --------------------------------------------------------------------------------------
# params sections of this module
# --------------------------------------------------------------------------------------


def test_tracking_params_defaults_and_errors():
    tracking = params_with().tracking  # params.yaml: the embedded store, no server needed
    assert tracking.uri is None and not tracking.fallback_local
    with pytest.raises(ParamsError, match="tracking.timeout_s: must be > 0"):
        params_with({"tracking": {"timeout_s": 0}})
    with pytest.raises(ParamsError, match="tracking.experiment: must not be empty"):
        params_with({"tracking": {"experiment": ""}})
    with pytest.raises(ParamsError, match="unknown key.*tracking.url"):
        params_with({"tracking": {"url": "http://x"}})


def test_runs_and_connection_import_without_keras():
    """The CLI and the Prefect flows import these; Keras (seconds) is only for cnnpipe.tracking.keras."""
    code = ("import sys, cnnpipe.tracking.runs, cnnpipe.tracking.connection, cnnpipe.flows.report; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------
# Where runs go
# --------------------------------------------------------------------------------------


def test_uri_precedence_env_then_params_then_embedded(tmp_path, monkeypatch):
    embedded = resolve_uri(section("tracking"), tmp_path)
    assert embedded == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_uri(section("tracking", uri="http://a:1"), tmp_path) == "http://a:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://b:2")
    assert resolve_uri(section("tracking", uri="http://a:1"), tmp_path) == "http://b:2"


def test_dvc_exp_temp_copy_logs_to_the_original_project(tmp_path):
    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    assert store_root(copy) == (tmp_path / "proj").resolve()
    assert store_root(tmp_path / "proj") == (tmp_path / "proj").resolve()


def test_unreachable_server_fails_within_seconds_naming_the_uri(tmp_path):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        connect(section("tracking", uri=f"http://user:s3cret@127.0.0.1:{port}", timeout_s=3), tmp_path)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in message
    assert "s3cret" not in message
    assert "fallback_local" in message


def test_unreachable_server_with_fallback_uses_the_embedded_store(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"
    conn = connect(section("tracking", uri=uri, timeout_s=3, fallback_local=True), tmp_path)
    assert conn.uri == embedded_uri(tmp_path) and conn.fallback_from == uri
    assert conn.embedded and (tmp_path / "mlartifacts").is_dir()
    assert "logging to sqlite:///" in caplog.text


# --------------------------------------------------------------------------------------
# Stage runs against a real server
# --------------------------------------------------------------------------------------


def test_stage_run_tags_params_dataset_and_no_credentials(mlflow_server, tmp_path, monkeypatch, capsys):  # noqa: F811
    root = tiny_project(tmp_path / "proj", "seed: 7\n")
    monkeypatch.chdir(root)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv(ENV_FLOW_RUN, "flow-run-123")
    with_credentials = mlflow_server.url.replace("http://", "http://user:s3cret@")  # the server ignores them
    params = params_with({
        "seed": 7,
        "tracking": {"uri": with_credentials, "experiment": "test-tracking"},
        "fetch": {"url": "https://user:s3cret@mirror.example.com/fmnist"},
    })
    conn = connect(params.tracking, root)
    parent_run = conn.client().create_run(conn.experiment_id())
    monkeypatch.setenv(ENV_PARENT_RUN, parent_run.info.run_id)
    (root / "plots").mkdir()
    (root / "plots" / "curve.csv").write_text("epoch,loss\n0,1.0\n")

    with stage_run("prepare", params, param_sections=["seed", "fetch"],
                            inputs={"prepared": "data/prepared", "extra": root / "data" / "extra.bin"}) as run:
        run.log_metrics({"accuracy": 0.5, "per_class": {"Bag": {"f1": 0.25}}, "backbone": "classifier"})
        run.log_artifacts(root / "plots")
        run.log_dataset(np.zeros((3, 4, 4, 1), np.float32), "prepared-test", f"md5:{LOCK_MD5}",
                        source=root / "data" / "prepared", context="testing")

    got = mlflow_server.get("runs/get", run_id=run.run_id)["run"]
    tags = {t["key"]: t["value"] for t in got["data"]["tags"]}
    params_logged = {p["key"]: p["value"] for p in got["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in got["data"]["metrics"]}
    assert tags["cnnpipe.stage"] == "prepare"
    assert tags["git.commit"] == git(root, "rev-parse", "HEAD") and tags["git.dirty"] == "false"
    assert tags["dvc.prepared"] == f"md5:{LOCK_MD5}"  # DVC's own hash, from dvc.lock
    assert tags["dvc.extra"] == f"sha256:{sha256_file(root / 'data' / 'extra.bin')}"  # not in dvc.lock
    assert tags["prefect.flow_run_id"] == "flow-run-123"
    assert tags["mlflow.parentRunId"] == parent_run.info.run_id
    assert params_logged["seed"] == "7"
    assert params_logged["fetch.url"] == "https://***@mirror.example.com/fmnist"
    assert metrics == {"accuracy": 0.5, "per_class.Bag.f1": 0.25}
    dataset = got["inputs"]["dataset_inputs"][0]
    assert dataset["dataset"]["digest"] == LOCK_MD5 and dataset["dataset"]["name"] == "prepared-test"
    arts = mlflow_server.get("artifacts/list", run_id=run.run_id, path="plots")["files"]
    assert [a["path"] for a in arts] == ["plots/curve.csv"]
    everything = json.dumps(got) + "".join(capsys.readouterr())  # MLflow prints run URLs too
    assert "s3cret" not in everything and "fake-secret" not in everything
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"  # basic auth, where MLflow reads it


def test_failing_stage_body_marks_the_run_failed(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    root = tiny_project(tmp_path / "proj", "seed: 1\n")
    monkeypatch.chdir(root)
    params = params_with({"tracking": {"uri": mlflow_server.url, "experiment": "test-tracking"}})
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run("train", params, param_sections=["seed"], inputs={}) as run:
            raise RuntimeError("boom")
    assert mlflow_server.get("runs/get", run_id=run.run_id)["run"]["info"]["status"] == "FAILED"


def test_epoch_logger_and_keras_model_with_dict_outputs(mlflow_server, tmp_path, monkeypatch):  # noqa: F811
    import keras
    import mlflow.pyfunc

    from cnnpipe.serving.pyfunc import loaded_model
    from cnnpipe.tracking.keras import MlflowEpochLogger, epoch_logger, log_pyfunc_model
    from cnnpipe.training.outputs import save_model

    root = tiny_project(tmp_path / "proj", "seed: 1\n")
    monkeypatch.chdir(root)
    params = params_with({"tracking": {"uri": mlflow_server.url, "experiment": "test-tracking"}})
    inputs = keras.Input((16, 16, 1), name="image")
    features = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, {"class": keras.layers.Dense(3, activation="softmax", name="class")(features),
                                 "box": keras.layers.Dense(4, activation="sigmoid", name="box")(features)})
    model.compile("adam", {"class": "sparse_categorical_crossentropy", "box": "mse"})
    rng = np.random.default_rng(0)
    x = rng.random((8, 16, 16, 1), dtype=np.float32)
    y = {"class": rng.integers(0, 3, 8), "box": rng.random((8, 4), dtype=np.float32)}

    with stage_run("train_localizer", params, param_sections=["seed"], inputs={}) as run:
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[epoch_logger(run)])
        save_model(model, tmp_path / "localizer.keras")
        meta = {"kind": "box", "class_names": ["a", "b", "c"]}
        served, files = loaded_model(tmp_path / "localizer.keras", meta, tmp_path, "train_localizer")
        pixels = (x * 255).astype(np.uint8)
        info = log_pyfunc_model(run, "model", files, input_example=pixels[:2],
                                output_example=served.predict(None, pixels[:2]), metadata=meta)

    history = mlflow_server.get("metrics/get-history", run_id=run.run_id, metric_key="loss")["metrics"]
    assert sorted(m["step"] for m in history) == [0, 1]
    assert isinstance(epoch_logger(run), MlflowEpochLogger)
    signature = info.signature.to_dict()
    outputs = sorted(o["name"] for o in json.loads(signature["outputs"]))
    assert outputs == ["class", "h", "probabilities", "probability", "w", "x", "y"]
    assert json.loads(signature["inputs"])[0]["tensor-spec"] == {"dtype": "uint8", "shape": [-1, -1, -1, -1]}
    answers = mlflow.pyfunc.load_model(info.model_uri).predict(pixels)
    expected = model.predict(pixels.astype(np.float32) / 255, verbose=0)  # what it was fed: the pixels
    np.testing.assert_allclose(np.stack(answers["probabilities"]), expected["class"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(answers["w"], np.round(expected["box"][:, 2] * 16).astype(int))


def test_embedded_store_lives_in_the_original_project(tmp_path, monkeypatch):
    """No URI anywhere: SQLite + mlartifacts/ in the project root, also from a `dvc exp` temp copy."""
    root = tiny_project(tmp_path / "proj", "seed: 1\n")
    copy = root / ".dvc" / "tmp" / "exps" / "tmp1234"
    tiny_project(copy, "seed: 2\n")
    monkeypatch.chdir(copy)
    params = params_with({"seed": 2, "tracking": {"experiment": "embedded"}})
    with stage_run("fetch", params, param_sections=["seed"], inputs={}) as run:
        run.log_artifacts(copy / "dvc.yaml")
    assert (root / "mlflow.db").is_file() and not (copy / "mlflow.db").exists()
    assert list((root / "mlartifacts").rglob("dvc.yaml"))
    logged = run.connection.client().get_run(run.run_id)
    assert logged.data.params == {"seed": "2"} and run.connection.embedded


def test_dvc_lock_outs_win_over_stale_deps(tmp_path):
    from cnnpipe.tracking.lineage import dvc_lock_hashes

    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n"
        "  train:\n    cmd: t\n    deps:\n    - path: data/x\n      hash: md5\n      md5: old\n"
        "  prepare:\n    cmd: p\n    outs:\n    - path: data/x\n      hash: md5\n      md5: new.dir\n"
    )
    assert dvc_lock_hashes(tmp_path) == {"data/x": "md5:new.dir"}
