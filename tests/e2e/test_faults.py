"""Faults (issue 6): the real stages on tiny data, in subprocesses that are killed or broken.

- ``kill -9`` of a training stage under ``dvc repro``: the next ``dvc repro`` resumes from the
  last completed epoch, and no declared output was ever half-written;
- an MLflow server that never answers, or is not there: the stage fails in seconds naming the
  URI, or, with ``tracking.fallback_local``, says so and logs to the embedded store;
- a full disk (a tiny tmpfs), a read-only output directory, permission denied: one line naming
  the path, and the previous model is byte-for-byte intact;
- two ``cnnpipe promote`` processes at once: one consistent ``@champion`` and history.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import params_with, write_params, write_tiny_idx_dataset
from mlflow_server import free_port, mlflow_server  # noqa: F401  (fixture)
from project import env, make_project, run

from cnnpipe.io import read_json, sha256_file

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 12  # long enough to kill it in the middle, seconds on tiny data
CHECKPOINT = Path("models/.checkpoints/classifier")
# train_classifier's declared outputs (dvc.yaml): none may ever be seen half-written.
DECLARED = ("models/classifier.keras", "metrics/train/classifier.json", "plots/history/classifier.csv")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project copy where ``dvc repro train_classifier`` has run (2 epochs)."""
    path = make_project(tmp_path_factory.mktemp("faults"),
                        {"train_classifier": {"fit": {"epochs": 2, "patience": 1000}}})
    run(["dvc", "repro", "train_classifier"], path)
    return path


def _epochs(csv_path: Path) -> list[int]:
    rows = csv_path.read_text().splitlines()[1:]
    return [int(row.split(",")[0]) for row in rows]


# --------------------------------------------------------------------------------------
# kill -9
# --------------------------------------------------------------------------------------


def test_kill_9_during_training_resumes_from_the_last_completed_epoch(project):
    # A retrain (its params changed), killed in the middle: nothing of it is in DVC's run cache.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train_classifier"]["fit"]["epochs"] = EPOCHS
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state = project / CHECKPOINT / "state.json"
    log = open(project / "killed.log", "wb")
    proc = subprocess.Popen(["dvc", "repro", "--single-item", "train_classifier"], cwd=project, env=env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not (state.exists() and read_json(state)["epoch"] >= 3):
            assert proc.poll() is None, (project / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no third epoch within 10 minutes"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage process: no clean-up runs
        proc.wait()
    killed_after = read_json(state)["epoch"]
    assert 3 <= killed_after < EPOCHS
    for rel in DECLARED:  # DVC removed the old ones before the run; the stage never wrote new ones
        assert not (project / rel).exists(), rel
    assert (project / CHECKPOINT / read_json(state)["model"]).is_file()

    result = run(["dvc", "repro", "--single-item", "train_classifier"], project)
    summary = read_json(project / "metrics/train/classifier.json")
    assert read_json(project / "reports/timings/classifier.json")["resumed_from_epoch"] == killed_after, \
        result.stdout[-2000:]
    assert summary["epochs_run"] == EPOCHS
    assert _epochs(project / "plots/history/classifier.csv") == list(range(EPOCHS))  # each epoch once
    assert f"resuming from checkpoint at epoch {killed_after}" in result.stdout + result.stderr
    assert not (project / CHECKPOINT).exists()
    status = run(["dvc", "status", "train_classifier"], project).stdout
    assert "changed" not in status and "modified" not in status, status


# --------------------------------------------------------------------------------------
# An output that cannot be written
# --------------------------------------------------------------------------------------


def _fault_params(project: Path) -> Path:
    """The project's params with a one-epoch classifier: a direct stage run, then broken."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train_classifier"]["fit"]["epochs"] = 1
    path = project / "params.fault.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _previous_model(project: Path) -> str:
    """Make sure a previous classifier exists; returns its hash."""
    model = project / "models/classifier.keras"
    if not model.exists():
        run([sys.executable, "-m", "stages.train_classifier", "--params", _fault_params(project).name], project)
    return sha256_file(model)


def _namespace() -> list[str]:
    """A command prefix giving the stage its own mount namespace (its mounts vanish with it)."""
    if os.geteuid() == 0:
        prefix = ["unshare", "--mount", "--propagation", "private"]
    else:
        prefix = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("cannot create a mount namespace here (unshare)")
    return prefix


def _run_with_broken_models_dir(project: Path, setup: str) -> tuple[int, str, dict[str, bytes]]:
    """Run the classifier stage after ``setup`` (shell, in the stage's mount namespace) broke
    ``models/``; returns its exit code, stderr and what ``models/`` then held."""
    params = _fault_params(project)
    after = Path(tempfile.mkdtemp(prefix="cnnpipe-after-"))
    script = f"""
set -e
saved=$(mktemp -d)
cp -a models/. "$saved/"
{setup}
set +e
{sys.executable} -m stages.train_classifier --params {params.name} 2> stage.err
echo $? > stage.rc
cp -a models/. {after}/
"""
    try:
        proc = subprocess.run([*_namespace(), "sh", "-c", script], cwd=project, env=env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        files = {str(p.relative_to(after)): p.read_bytes() for p in sorted(after.rglob("*")) if p.is_file()}
        return int((project / "stage.rc").read_text()), (project / "stage.err").read_text(), files
    finally:
        shutil.rmtree(after, ignore_errors=True)


def test_a_full_disk_fails_naming_the_path_and_keeps_the_previous_model(project):
    before = _previous_model(project)
    size_kib = (project / "models/classifier.keras").stat().st_size // 1024 + 64  # the old model + a little
    code, err, files = _run_with_broken_models_dir(project, f"""
mount -t tmpfs -o size={size_kib}k cnnpipe-full models
cp -a "$saved/." models/
""")
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(r"stage train_classifier failed: cannot write models/\.checkpoints/classifier: "
                        r"No space left on device \(\d+\.\d MB free there\); the previous classifier "
                        r"\(if any\) is unchanged", line), err[-2000:]
    assert "Traceback" not in err
    assert hashlib.sha256(files["classifier.keras"]).hexdigest() == before
    leftovers = [name for name in files if name not in ("classifier.keras", ".gitignore")
                 and not name.endswith("history.csv")]
    assert not leftovers, leftovers  # no half-written model or checkpoint left behind
    assert sha256_file(project / "models/classifier.keras") == before


def test_a_read_only_output_directory_fails_naming_the_path(project):
    before = _previous_model(project)
    code, err, files = _run_with_broken_models_dir(project, """
mount --bind models models
mount -o remount,bind,ro models
""")
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("stage train_classifier failed: ") and "Read-only file system" in line, err[-2000:]
    assert "models/.checkpoints/classifier" in line and "Traceback" not in err
    assert sha256_file(project / "models/classifier.keras") == before


def test_permission_denied_fails_naming_the_path_and_keeps_the_previous_model(project):
    """``models/`` made read-only by its mode; root, who ignores modes, runs the stage without
    the capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    before = _previous_model(project)
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
            pytest.skip("root cannot drop CAP_DAC_OVERRIDE here (setpriv)")
    models = project / "models"
    modes = {path: path.stat().st_mode for path in [models, *models.rglob("*")]}
    try:
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        proc = subprocess.run([*prefix, sys.executable, "-m", "stages.train_classifier",
                               "--params", _fault_params(project).name],
                              cwd=project, env=env(), capture_output=True, text=True, timeout=600)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("stage train_classifier failed: cannot write models/.checkpoints"), line
    assert "Permission denied" in line and "Traceback" not in proc.stderr
    assert sha256_file(models / "classifier.keras") == before
    assert sorted(p.relative_to(models) for p in models.rglob("*") if p.is_file()) == [
        Path(".gitignore"), Path("classifier.keras")]


# --------------------------------------------------------------------------------------
# MLflow server that hangs or is not there
# --------------------------------------------------------------------------------------


def _tiny_stage_dir(tmp_path: Path, tracking: dict) -> Path:
    """A directory where ``stages.fetch`` can run (tiny IDX data), with ``tracking`` params."""
    write_tiny_idx_dataset(tmp_path / "idx", n_train=20, n_test=10)
    write_params(tmp_path / "params.yaml", {
        "fetch": {"dataset": "idx", "local_dir": str(tmp_path / "idx"), "system_dir": None, "url": None},
        "tracking": tracking,
    })
    return tmp_path


def _fetch(cwd: Path, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    stage_env = {**env(), "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=cwd, env=stage_env,
                          capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - start


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a hung server or proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_hung_mlflow_server_fails_the_stage_within_the_timeout(tmp_path, silent_server):
    cwd = _tiny_stage_dir(tmp_path, {"timeout_s": 2})
    proc, seconds = _fetch(cwd, silent_server)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"stage fetch failed: MLflow tracking server {silent_server} is unreachable")
    gave_up = float(re.search(r"gave up after ([\d.]+)s", line).group(1))
    assert gave_up < 4 and seconds < 120  # MLflow's own client would retry for minutes
    assert "fallback_local: true" in line
    assert not (cwd / "data").exists() and not (cwd / "mlflow.db").exists()


def test_an_absent_mlflow_server_with_fallback_logs_locally_and_says_so(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    cwd = _tiny_stage_dir(tmp_path, {"timeout_s": 2, "fallback_local": True})
    proc, _ = _fetch(cwd, uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{uri} is unreachable" in proc.stderr
    assert f"tracking.fallback_local is set: logging to sqlite:///{cwd.resolve()}/mlflow.db instead" in proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnpipe").experiment_id])
    assert [r.data.tags["cnnpipe.tracking_fallback_from"] for r in runs] == [uri]
    assert runs[0].info.status == "FINISHED" and (cwd / "data/raw/idx/source.json").is_file()


# --------------------------------------------------------------------------------------
# Two promotions at once
# --------------------------------------------------------------------------------------


def test_two_promote_processes_at_once_leave_one_consistent_champion(tmp_path, mlflow_server):  # noqa: F811
    from mlflow.tracking import MlflowClient

    from cnnpipe.registry.gates import gate_for
    from cnnpipe.registry.promotion import promote
    from cnnpipe.registry.versions import EVENT_PREFIX, register_version

    name = f"conc-{uuid.uuid4().hex[:8]}"
    write_params(tmp_path / "params.yaml",
                 {"tracking": {"uri": mlflow_server.url, "experiment": "test-faults"}, "register": {"classifier_name": name}})
    gate = gate_for(params_with({"register": {"classifier_name": name}}).register, name)
    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    experiment = client.get_experiment_by_name("test-faults") or client.get_experiment(
        client.create_experiment("test-faults"))

    def version(accuracy: float) -> str:
        run_id = client.create_run(experiment.experiment_id).info.run_id
        return register_version(client, f"runs:/{run_id}/model", gate, run_id=run_id, model_id=None,
                                metrics={"accuracy": accuracy}, test_set="sha256:t").version

    first = version(0.85)
    assert promote(client, gate, first).promote
    worse, better = version(0.90), version(0.92)

    stage_env = {**env(), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "cnnpipe.cli", "promote", name, "--version", v],
                              cwd=tmp_path, env=stage_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for v in (worse, better)]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes[1] == 0, outputs[1]  # 0.92 ends as champion whichever ran first
    assert codes[0] in (0, 1) and "Traceback" not in outputs[0][1], outputs[0]

    model = mlflow_server.get("registered-models/get", name=name)["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert aliases["champion"] == better
    # Each version's last recorded event agrees with where the aliases ended.
    last = {}
    for v in (first, worse, better):
        tags = {t["key"]: t["value"] for t in mlflow_server.get("model-versions/get", name=name, version=v)
                ["model_version"].get("tags", [])}
        events = [json.loads(tags[k]) for k in sorted(tags) if k.startswith(EVENT_PREFIX)]
        last[v] = events[-1]["event"]
    assert last[better] == "promoted"
    assert last[aliases["previous"]] == "demoted"
    promoted = [v for v, event in last.items() if event == "promoted"]
    assert promoted == [better]
