"""Registry faults through the real ``register@classifier`` stage and ``cnnpipe`` command, on a
tiny project with the embedded SQLite store: bad version numbers, Ctrl-C during registration,
a store deleted (before a run, or under one), a store directory that does not exist, registry
commands outside a project, a corrupt model file, and rollback's account of what it moved.

Controlled points come from the promotion lock: the test holds it (``flock``), so the stage or
command waits there, at a known step, until the test acts (a signal, a deleted store, a
concurrent promotion) and lets it go.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import write_params
from project import env

from cnnpipe.config import load_params
from cnnpipe.io import read_json, save_array, write_json
from cnnpipe.registry.gates import gate_for
from cnnpipe.registry.promotion import promote
from cnnpipe.registry.versions import CHAMPION, history, register_version
from cnnpipe.tracking.connection import connect

REPO = Path(__file__).resolve().parents[2]
NAME = "cnnpipe-classifier"
WAIT_S = 300  # generous bound on a busy 2-core machine; the tests never assert durations


# --------------------------------------------------------------------------------------
# A tiny project: one classifier, its test set and metrics, the embedded store
# --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest points every run at a throw-away server store; here the project's own is the point
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A tiny 28x28 -> 10-class Keras model file."""
    import keras

    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, padding="same")(inputs))
    path = tmp_path_factory.mktemp("model") / "classifier.keras"
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    return path.read_bytes()


def make_project(root: Path, model: bytes, accuracy: float = 0.6) -> Path:
    root.mkdir(parents=True)
    write_params(root / "params.yaml", {"register": {"min_accuracy": 0.1}})
    (root / "dvc.yaml").write_text("stages: {}\n")
    rng = np.random.default_rng(0)
    data = root / "data/prepared/classification"
    save_array(data / "test_images.npy", rng.integers(0, 256, (4, 28, 28, 1)).astype(np.uint8))
    save_array(data / "test_labels.npy", rng.integers(0, 10, 4).astype(np.uint8))
    write_json(data / "meta.json", {"class_names": [f"c{i}" for i in range(10)]})
    (root / "models").mkdir()
    (root / "models/classifier.keras").write_bytes(model)
    write_json(root / "metrics/classifier.json", {"accuracy": accuracy})
    return root


def stage_env() -> dict[str, str]:
    return {**env(), "PYTHONPATH": str(REPO)}


def start_register(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stages.register", "--task", "classifier"], cwd=project,
                            env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def register(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stages.register", "--task", "classifier"], cwd=project,
                          env=stage_env(), check=False, capture_output=True, text=True, timeout=WAIT_S)


def cnnpipe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnnpipe.cli", *args], cwd=cwd, env=stage_env(),
                          check=False, capture_output=True, text=True, timeout=WAIT_S)


def one_line(stderr: str) -> str:
    """The failure line: the last line of stderr, with no traceback anywhere."""
    assert "Traceback" not in stderr and "database is locked" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def client_of(project: Path):
    return connect(load_params(project / "params.yaml").tracking, project).client()


def seed_versions(project: Path, accuracies: list[float], promote_each: bool = True) -> list[str]:
    """Versions of NAME registered straight into the project's store (no stage run), promoted in turn."""
    client = client_of(project)
    gate = gate_for(load_params(project / "params.yaml").register, NAME)
    experiment = client.get_experiment_by_name("seed") or client.get_experiment(client.create_experiment("seed"))
    out = []
    for accuracy in accuracies:
        run = client.create_run(experiment.experiment_id)
        version = register_version(client, f"runs:/{run.info.run_id}/model", gate, run_id=run.info.run_id,
                                   model_id=None, metrics={"accuracy": accuracy}, test_set="sha256:t")
        if promote_each:
            assert promote(client, gate, version.version).promote
        out.append(str(version.version))
    return out


@contextlib.contextmanager
def promotion_lock(project: Path) -> Iterator[None]:
    """Hold the registry's promotion lock (the one beside ``mlflow.db``) for the body."""
    with open(project / "mlflow.db.promote.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def wait_until_waiting_for_lock(proc: subprocess.Popen[str], project: Path) -> None:
    """Until ``proc`` has the lock file open: it is inside the lock wait, past everything before it."""
    lock = str((project / "mlflow.db.promote.lock").resolve())
    deadline = time.monotonic() + WAIT_S
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == lock for fd in Path(f"/proc/{proc.pid}/fd").iterdir()):
                return
        assert time.monotonic() < deadline, "the process never reached the promotion lock"
        time.sleep(0.1)


def aliases(client, name: str = NAME) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


# --------------------------------------------------------------------------------------
# cnnpipe promote / rollback / lineage
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "message"), [
    ("999", f"cnnpipe promote: {NAME}/999: no version 999 of model '{NAME}'"),
    ("abc", f"cnnpipe promote: {NAME}/abc: 'abc' is not a version number (versions are 1, 2, ...)"),
])
def test_promote_a_missing_or_malformed_version_is_one_line(tmp_path, model_bytes, version, message):
    project = make_project(tmp_path / "p", model_bytes)
    seed_versions(project, [0.5])
    proc = cnnpipe(project, "promote", NAME, "--version", version)
    assert proc.returncode == 1 and one_line(proc.stderr) == message
    assert aliases(client_of(project)) == {CHAMPION: "1"}  # nothing moved


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the lock wait")
def test_rollback_names_the_versions_it_actually_moved(tmp_path, model_bytes):
    """A promotion lands while `cnnpipe rollback` waits for the lock: it reports the champion
    it replaced when it ran, not the one it saw before waiting."""
    project = make_project(tmp_path / "p", model_bytes)
    v1, v2 = seed_versions(project, [0.5, 0.6])  # @champion v2, @previous v1
    client = client_of(project)
    gate = gate_for(load_params(project / "params.yaml").register, NAME)
    with promotion_lock(project):
        proc = subprocess.Popen([sys.executable, "-m", "cnnpipe.cli", "rollback", NAME], cwd=project,
                                env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until_waiting_for_lock(proc, project)
        (v3,) = seed_versions(project, [0.7], promote_each=False)
        assert promote(client, gate, v3).promote  # meanwhile: @champion v3, @previous v2
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err[-3000:]
    assert out.strip() == f"{NAME}: version {v2} is @champion again (was version {v3})"
    assert aliases(client) == {CHAMPION: v2, "previous": v1}


def test_registry_commands_outside_a_project_create_no_store(tmp_path):
    lone = tmp_path / "elsewhere"
    lone.mkdir()
    proc = cnnpipe(lone, "lineage", NAME)  # no params.yaml here or above
    assert proc.returncode == 1 and one_line(proc.stderr).startswith("cnnpipe lineage: ")
    write_params(lone / "params.yaml")  # a params file, but no project and no store
    for args in (["lineage", NAME], ["promote", NAME], ["rollback", NAME]):
        proc = cnnpipe(lone, *args)
        line = one_line(proc.stderr)
        assert proc.returncode == 1 and f"no tracking store at {lone.resolve()}/mlflow.db" in line, line
    assert sorted(p.name for p in lone.iterdir()) == ["params.yaml"]  # no mlflow.db, no mlartifacts/


# --------------------------------------------------------------------------------------
# The register stage
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the lock wait")
def test_ctrl_c_during_register_is_cleaned_up(tmp_path, model_bytes):
    """SIGINT while register@classifier waits for the promotion lock, after it registered its
    version: the stage exits non-zero with one line, its MLflow run is KILLED (not left RUNNING),
    the version gets an `interrupted` decision and stays @challenger, the champion is untouched."""
    project = make_project(tmp_path / "p", model_bytes)
    (champion,) = seed_versions(project, [0.5])
    with promotion_lock(project):
        proc = start_register(project)
        wait_until_waiting_for_lock(proc, project)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode != 0 and one_line(err) == "stage register@classifier interrupted", err[-3000:]
    assert not (project / "metrics/register/classifier.json").exists()  # no success reported

    client = client_of(project)
    new = str(int(champion) + 1)
    assert aliases(client) == {CHAMPION: champion, "challenger": new}
    version = client.get_model_version(NAME, new)
    assert [e["event"] for e in history(version)] == ["registered", "interrupted"]
    assert version.tags["cnnpipe.decision"] == "interrupted"
    run = client.get_run(version.run_id)
    assert run.info.status == "KILLED" and run.data.tags["cnnpipe.stage"] == "register@classifier"


def test_a_deleted_store_is_refused_not_replaced_by_an_empty_one(tmp_path, model_bytes):
    project = make_project(tmp_path / "p", model_bytes, accuracy=0.3)
    seed_versions(project, [0.9])  # a champion a 0.3 model does not beat
    (project / "mlflow.db").unlink()

    proc = register(project)
    line = one_line(proc.stderr)
    assert proc.returncode == 1 and line.startswith(f"stage register@classifier failed: tracking store "
                                                    f"{project.resolve()}/mlflow.db is missing"), line
    assert "restore mlflow.db from your backup" in line and "delete mlflow.db.created" in line
    assert not (project / "mlflow.db").exists() and not (project / "metrics/register").exists()

    # Starting afresh is a deliberate act: delete what the message names.
    for name in ("mlflow.db.created", "mlflow.db.promote.lock"):
        (project / name).unlink(missing_ok=True)
    proc = register(project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(project / "metrics/register/classifier.json")["promoted"] is True
    assert (project / "mlflow.db.created").is_file()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the lock wait")
def test_a_store_deleted_under_a_running_stage_is_one_line(tmp_path, model_bytes):
    project = make_project(tmp_path / "p", model_bytes)
    seed_versions(project, [0.5])
    with promotion_lock(project):
        proc = start_register(project)
        wait_until_waiting_for_lock(proc, project)
        (project / "mlflow.db").unlink()
    _, err = proc.communicate(timeout=WAIT_S)
    line = one_line(err)
    assert proc.returncode == 1, err[-3000:]
    assert line == (f"stage register@classifier failed: tracking store {project.resolve()}/mlflow.db was "
                    "deleted or moved while this ran; this run's records are lost. Restore mlflow.db "
                    "from your backup and run again"), line
    assert not (project / "metrics/register").exists()


def test_a_sqlite_store_in_a_missing_directory_is_named(tmp_path, model_bytes):
    project = make_project(tmp_path / "p", model_bytes)
    missing = tmp_path / "no" / "such" / "dir"
    proc = subprocess.run([sys.executable, "-m", "stages.register", "--task", "classifier"], cwd=project,
                          env={**stage_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{missing}/mlflow.db"},
                          check=False, capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == (
        f"stage register@classifier failed: tracking store sqlite:///{missing}/mlflow.db: the directory "
        f"{missing} does not exist; create it, or point tracking.uri / MLFLOW_TRACKING_URI at another store")
    assert not (tmp_path / "no").exists() and not (project / "mlflow.db").exists()


def test_a_corrupt_model_file_is_named_with_its_stage(tmp_path, model_bytes):
    project = make_project(tmp_path / "p", model_bytes[: len(model_bytes) // 2])  # truncated
    seed_versions(project, [0.5])
    proc = register(project)
    line = one_line(proc.stderr)
    assert proc.returncode == 1 and "File not found" not in line
    assert line.startswith("stage register@classifier failed: models/classifier.keras: not a loadable Keras "
                           "model: not a valid Keras archive"), line
    assert "written by the 'train_classifier' stage" in line
    client = client_of(project)
    assert aliases(client) == {CHAMPION: "1"} and len(client.search_model_versions(f"name='{NAME}'")) == 1
