"""Security (issue 6): no code runs from data or model files, servers we start listen on
127.0.0.1 only, and a credential never reaches logs, records, MLflow or Prefect artifacts.

(Pickles refused: tests/e2e/test_bad_input.py; safe archive extraction: tests/data/test_own_data.py and
tests/e2e/test_bad_input.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import params_with, write_params, write_tiny_idx_dataset
from mlflow_server import free_port, mlflow_server  # noqa: F401  (fixture)
from project import env

from cnnpipe import cli
from cnnpipe.flows.report import pipeline_report
from cnnpipe.registry.gates import gate_for
from cnnpipe.registry.versions import register_version
from cnnpipe.security import redact
from cnnpipe.tracking.runs import stage_run

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pa55"


# --------------------------------------------------------------------------------------
# Keras safe mode, also for models that come from the registry
# --------------------------------------------------------------------------------------


def test_predict_refuses_a_registered_model_with_a_lambda_layer(tmp_path, capsys):
    """A registered model whose Lambda layer would run code when loaded unsafely: `cnnpipe
    predict` refuses it (safe mode) and the code never runs."""
    import keras
    from PIL import Image

    from cnnpipe.serving.pyfunc import ImageModel, model_files
    from cnnpipe.tracking.keras import log_pyfunc_model

    marker = tmp_path / "pwned"
    inputs = keras.Input((8, 8, 1))
    # The path is a constant of the lambda's own bytecode: what a hostile file would carry.
    payload = eval(f'lambda t: t * (1.0 + 0.0 * float(__import__("pathlib").Path({str(marker)!r}).touch() is None))')
    outputs = keras.layers.Lambda(payload)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(outputs)))
    name = f"lambda-{uuid.uuid4().hex[:8]}"
    params = params_with({"register": {"classifier_name": name}})
    with stage_run("test_lambda", params, param_sections=[], inputs={}, root=tmp_path) as run:
        keras_file = tmp_path / "hostile.keras"
        model.save(keras_file)
        served = ImageModel().configure("class", ["a", "b"], model.input_shape)
        served.model = model
        example = np.zeros((1, 8, 8, 1), np.uint8)
        files = model_files(keras_file, {"kind": "class", "class_names": ["a", "b"]}, tmp_path)
        info = log_pyfunc_model(run, "model", files, input_example=example,
                                output_example=served.predict(None, example))
        gate = gate_for(params.register, name)
        version = register_version(run.connection.client(), info.model_uri, gate, run_id=run.run_id,
                                   model_id=info.model_id, metrics={}, test_set="t")
    marker.unlink()  # logging called the model; from here on nothing may
    Image.new("L", (8, 8), 128).save(tmp_path / "x.png")

    capsys.readouterr()
    rc = cli.main(["predict", f"{name}/{version.version}", str(tmp_path / "x.png"), "--backend", "keras"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"models:/{name}/{version.version}: " in err and "not a loadable Keras model" in err
    assert "Lambda" in err and "Traceback" not in err
    assert not marker.exists()

    # The test can fail: unsafe loading would have run the payload.
    loaded = keras.saving.load_model(_downloaded(info.model_uri, tmp_path), safe_mode=False)
    loaded(np.zeros((1, 8, 8, 1), np.float32))
    assert marker.exists()


def _downloaded(model_uri: str, tmp_path: Path) -> Path:
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "dl")))
    return next(local.rglob("*.keras"))


# --------------------------------------------------------------------------------------
# Servers bind to 127.0.0.1
# --------------------------------------------------------------------------------------


def _listeners(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_cnnpipe_ui_listens_on_loopback_only(tmp_path):
    port = free_port()
    write_params(tmp_path / "params.yaml")  # the CLI reads its params there (no defaults in code)
    proc = subprocess.Popen([sys.executable, "-m", "cnnpipe.cli", "ui", "--port", str(port)], cwd=tmp_path,
                            env={**env(), "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _listeners(port):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the UI did not start listening"
            time.sleep(0.25)
        time.sleep(1)  # every worker has bound by now
        assert _listeners(port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0 or ::
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_prefect_servers_default_to_loopback(monkeypatch):
    for var in ("PREFECT_SERVER_API_HOST", "PREFECT_RUNNER_SERVER_HOST"):
        monkeypatch.delenv(var, raising=False)
    from prefect.settings import PREFECT_RUNNER_SERVER_HOST, PREFECT_SERVER_API_HOST

    assert PREFECT_SERVER_API_HOST.value() == "127.0.0.1"  # `prefect server start`, the temporary server
    assert PREFECT_RUNNER_SERVER_HOST.value() in ("localhost", "127.0.0.1")  # flow.serve's webserver


def test_no_code_or_doc_binds_to_all_interfaces():
    files = [*REPO.glob("cnnpipe/**/*.py"), *REPO.glob("pipelines/**/*.py"), *REPO.glob("stages/*.py"),
             REPO / "Makefile", REPO / "README.md"]
    offenders = [str(f.relative_to(REPO)) for f in files if "0.0.0.0" in f.read_text()]
    assert not offenders


# --------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------


def test_redact_removes_userinfo_only():
    assert redact("https://user:s3cret@host:5000/x") == "https://***@host:5000/x"
    assert redact("a postgresql://u:p@db/x and s3://k@bucket/y") == "a postgresql://***@db/x and s3://***@bucket/y"
    assert redact("http://127.0.0.1:5000/#/experiments") == "http://127.0.0.1:5000/#/experiments"


def test_a_stage_with_credentials_in_the_uri_and_env_writes_them_nowhere(tmp_path, mlflow_server):  # noqa: F811
    """The real fetch stage logs to a real server through a URI carrying user:password, with a
    cloud secret in its environment and a password in a params URL: neither its output, its
    files, nor its MLflow run (params, tags, artifacts) carries them."""
    write_tiny_idx_dataset(tmp_path / "source", n_train=20, n_test=10)
    write_params(tmp_path / "params.yaml", {
        "fetch": {"dataset": "idx", "local_dir": str(tmp_path / "source"), "system_dir": None,
                  "url": f"https://reader:{SECRET}@mirror.invalid/fmnist"},
        "tracking": {"experiment": "test-security"},
    })
    uri = mlflow_server.url.replace("http://", f"http://alice:{SECRET}@")
    stage_env = {**env(), "MLFLOW_TRACKING_URI": uri, "AWS_SECRET_ACCESS_KEY": f"aws-{SECRET}",
                 "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=tmp_path, env=stage_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml" and "source" not in p.parts]
    assert written and not [str(p) for p in written if SECRET.encode() in p.read_bytes()]

    experiment = mlflow_server.get("experiments/get-by-name", experiment_name="test-security")["experiment"]
    import urllib.request

    req = urllib.request.Request(f"{mlflow_server.url}/api/2.0/mlflow/runs/search", method="POST",
                                 data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        runs = json.load(resp)["runs"]
    assert runs
    record = json.dumps(runs)
    assert SECRET not in record and "mirror.invalid" in record  # the params URL is there, redacted
    run_id = runs[0]["info"]["run_id"]
    for artifact in mlflow_server.get("artifacts/list", run_id=run_id, path="fetch").get("files", []):
        content = mlflow_server.artifact(f"{experiment['experiment_id']}/{run_id}/artifacts/{artifact['path']}")
        assert SECRET.encode() not in content


def test_the_prefect_report_and_stage_failure_carry_no_credentials(tmp_path):
    report = pipeline_report(
        {"fetch": "ran", "train_classifier": "failed"}, tmp_path,
        parent_url=f"http://bob:{SECRET}@mlflow.internal:5000/#/experiments/1/runs/abc",
        error=f"stage 'train_classifier' failed:\nConnectionError: http://bob:{SECRET}@mlflow.internal:5000/api",
    )
    assert SECRET not in report and "http://***@mlflow.internal:5000/api" in report

    from cnnpipe.flows.dvc import StageFailed, run_stage

    failing = tmp_path / "p"
    failing.mkdir()
    (failing / "dvc.yaml").write_text(
        "stages:\n  leak:\n    cmd: python -c \"import sys; sys.exit('cannot reach "
        f"https://bob:{SECRET}@db.internal/x')\"\n")
    subprocess.run(["git", "init", "-q"], cwd=failing, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=failing, check=True, env=env())
    with pytest.raises(StageFailed) as err:
        run_stage(failing, "leak", env(), timeout_s=300).raise_for_failure()
    assert "cannot reach https://***@db.internal/x" in str(err.value) and SECRET not in str(err.value)
