"""Credentials with the characters that break URL parsing (``#``, ``/``, ``@``, percent-encoded
ones) never reach the user's terminal, a log, an MLflow record, a Prefect report or a file: through
the real fetch stage and ``cnnpipe`` command against a real MLflow server, and the real prepare
stage given an ``oxford_pet`` URL with ``user:password@``. Also: downloaded archives are named by
their (redacted) URL, not a temp file, when refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import write_params, write_tiny_idx_dataset
from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from own_data import evil_tar
from project import TINY_PARAMS, env

from cnnpipe.flows.report import pipeline_report
from cnnpipe.security import credentials, redact, strip_userinfo

REPO = Path(__file__).resolve().parents[2]
# Each password's pieces around its special characters are distinct tokens: a leak of any part
# (the prefix urlsplit took for a port, the tail after an '@') is found.
PIECES = ("Qx7kv", "Zr9fb", "Wm3pd")
PASSWORDS = {
    "percent-at-hash-slash": "Qx7kv%40Zr9fb#/Wm3pd",
    "hash": "Qx7kv#Zr9fb",
    "slash": "Qx7kv/Zr9fb",
    "at": "Qx7kv@Zr9fb",
    "percent-encoded": "Qx7kv%2FZr9fb%23Wm3pd",
}


def leaks(text: str | bytes) -> list[str]:
    data = text.decode(errors="replace") if isinstance(text, bytes) else text
    return [p for p in PIECES if p in data]


def crash_logs_since(start: float) -> list[Path]:
    logs = Path(tempfile.gettempdir()) / "cnnpipe-logs"
    return [p for p in logs.glob("*.log") if p.stat().st_mtime >= start] if logs.is_dir() else []


def run(cmd: list[str], cwd: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env={**env(), "PYTHONPATH": str(REPO), **extra_env}, check=False,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_redaction_splits_at_the_last_at_sign(password):
    uri = f"http://alice:{password}@127.0.0.1:5000/api"
    assert redact(uri) == "http://***@127.0.0.1:5000/api"
    assert strip_userinfo(uri) == "http://127.0.0.1:5000/api"
    user, secret = credentials(uri)
    assert user == "alice" and secret == password.replace("%40", "@").replace("%2F", "/").replace("%23", "#")
    assert not leaks(redact(f"failed: {uri} (retry); also {uri}/x"))


@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_a_tracking_password_is_written_nowhere(tmp_path, mlflow_server, password):  # noqa: F811
    start = time.time()
    write_tiny_idx_dataset(tmp_path / "source", n_train=20, n_test=10)
    experiment = f"creds-{abs(hash(password)) % 10**8}"
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    write_params(project / "params.yaml", {
        "fetch": {"dataset": "idx", "local_dir": str(tmp_path / "source"), "system_dir": None, "url": None},
        "tracking": {"experiment": experiment},
    })
    uri = mlflow_server.url.replace("http://", f"http://alice:{password}@")
    outputs = []

    proc = run([sys.executable, "-m", "stages.fetch"], project, {"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, redact(proc.stderr[-3000:])  # the URI works: the password reached MLflow's auth
    outputs.append(proc.stdout + proc.stderr)
    # A model no other test registers on the shared server, and a malformed version: both one line.
    for args in (["lineage", "cnnpipe-credentials-no-such-model"], ["promote", "cnnpipe-classifier", "--version", "abc"]):
        proc = run([sys.executable, "-m", "cnnpipe.cli", *args], project, {"MLFLOW_TRACKING_URI": uri})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr  # an unknown model: one line
        outputs.append(proc.stdout + proc.stderr)
    closed = uri.rsplit(":", 1)[0] + ":9"  # nothing listens on port 9: the failure names the URI
    proc = run([sys.executable, "-m", "stages.fetch"], project, {"MLFLOW_TRACKING_URI": closed})
    assert proc.returncode == 1 and "server http://127.0.0.1:9 is unreachable" in proc.stderr.splitlines()[-1]
    outputs.append(proc.stdout + proc.stderr)
    outputs.append(pipeline_report({"fetch": "ran"}, project, parent_url=f"{uri}/#/experiments/1",
                                   error=f"stage 'fetch' failed: cannot reach {uri}/api"))

    assert not [leaks(o) for o in outputs if leaks(o)]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "source" not in p.parts]
    assert files and not [str(p) for p in files if leaks(p.read_bytes())]
    assert not [str(p) for p in crash_logs_since(start) if leaks(p.read_bytes())]
    assert not leaks((mlflow_server.root / "server.log").read_bytes())

    found = mlflow_server.get("experiments/get-by-name", experiment_name=experiment)["experiment"]
    req = urllib.request.Request(f"{mlflow_server.url}/api/2.0/mlflow/runs/search", method="POST",
                                 data=json.dumps({"experiment_ids": [found["experiment_id"]]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        runs = json.load(resp)["runs"]
    assert runs and not leaks(json.dumps(runs))  # params, tags (incl. MLflow's own), run info
    for artifact in mlflow_server.get("artifacts/list", run_id=runs[0]["info"]["run_id"], path="fetch").get("files", []):
        assert not leaks(mlflow_server.artifact(
            f"{found['experiment_id']}/{runs[0]['info']['run_id']}/artifacts/{artifact['path']}"))


def test_an_unparseable_tracking_uri_is_one_line_without_the_password(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write_params(tmp_path / "params.yaml")
    uri = f"http://alice:{PASSWORDS['hash']}@127.0.0.1:notaport/"
    proc = run([sys.executable, "-m", "cnnpipe.cli", "lineage", "cnnpipe-classifier"], tmp_path,
               {"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 1 and not leaks(proc.stdout + proc.stderr) and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "cnnpipe lineage: tracking URI http://***@127.0.0.1:notaport/ is not a valid URL (Port could not be "
        "cast to integer value as 'notaport'); percent-encode special characters of a user name or password "
        "(e.g. '#' as %23, '/' as %2F)")


# --------------------------------------------------------------------------------------
# The prepare stage downloading an oxford_pet archive
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fetched_project(tmp_path_factory) -> Path:
    """A tiny project whose fetch stage has run (the prepare stage composes scenes from it first)."""
    tmp = tmp_path_factory.mktemp("pets")
    write_tiny_idx_dataset(tmp / "source", n_train=200, n_test=60)
    project = tmp / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    write_params(project / "params.yaml", {**TINY_PARAMS, "fetch": {
        "dataset": "idx", "local_dir": str(tmp / "source"), "system_dir": None, "url": None}})
    proc = run([sys.executable, "-m", "stages.fetch"], project, {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return project


def prepare_with_pets_url(project: Path, url: str) -> subprocess.CompletedProcess[str]:
    """The prepare stage with ``datasets.localization``: oxford_pet from ``url``."""
    source = project.parent / "source"
    write_params(project / "params.yaml", {
        **TINY_PARAMS, "fetch": {"dataset": "idx", "local_dir": str(source), "system_dir": None, "url": None},
        "datasets": {"localization": {"format": "oxford_pet", "url": url}}})
    return run([sys.executable, "-m", "stages.prepare"], project, {})


def test_an_oxford_pet_url_with_a_password_is_refused_redacted(fetched_project, http_dir):
    _, base = http_dir
    url = base.replace("http://", f"http://reader:{PASSWORDS['percent-at-hash-slash']}@") + "/pets.tar.gz"
    start = time.time()
    proc = prepare_with_pets_url(fetched_project, url)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert line == (
        f"stage prepare failed: oxford_pet: cannot download: {base.replace('http://', 'http://***@')}"
        "/pets.tar.gz: a URL with user:password@ cannot be downloaded (the downloader sends no credentials); "
        "download it yourself and give the local copy instead (datasets.<name>.path, or fetch.local_dir)")
    assert not leaks(proc.stdout + proc.stderr)
    files = [p for p in fetched_project.rglob("*") if p.is_file() and p.name != "params.yaml"]
    assert not [str(p) for p in files + crash_logs_since(start) if leaks(p.read_bytes())]


def test_an_unsafe_downloaded_archive_is_named_by_its_url_and_member(fetched_project, http_dir):
    www, base = http_dir
    evil_tar(www / "pets.tar.gz", "dotdot")
    proc = prepare_with_pets_url(fetched_project, f"{base}/pets.tar.gz")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"stage prepare failed: {base}/pets.tar.gz: refusing member '../escape.txt': '..' escapes the "
        "target directory")
    assert not (www.parent / "escape.txt").exists()
