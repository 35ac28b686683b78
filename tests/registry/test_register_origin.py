"""The real ``register@classifier`` stage and ``cnnpipe promote`` on a tiny git project with the
embedded store: a committed, clean run promotes through the gates (also on a sharded test
split); uncommitted edits or a DVC experiment register a @challenger only, tagged, and promote
nothing; ``cnnpipe promote NAME --experiment EXP`` then decides through the gates, recorded.

`dvc exp run` itself is exercised end to end in tests/e2e/test_experiments_e2e.py; here the stage
gets the two variables DVC sets for it (DVC_EXP_NAME, DVC_EXP_BASELINE_REV)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from registry.test_registry_faults import (  # noqa: F401  (model_bytes: a fixture)
    NAME,
    WAIT_S,
    aliases,
    client_of,
    cnnpipe,
    make_project,
    model_bytes,
    one_line,
    stage_env,
)

from cnnpipe.io import read_json, save_array, write_json
from cnnpipe.registry.provenance import (
    BASELINE_TAG,
    EXPERIMENT_TAG,
    ORIGIN_TAG,
    PARAMS_CHANGED_TAG,
)
from cnnpipe.registry.versions import history


@pytest.fixture(autouse=True)
def _embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest points every run at a throw-away server store; here the project's own is the point
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root,
                          check=True, capture_output=True, text=True).stdout.strip()


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


def git_project(root: Path, model: bytes) -> Path:
    """test_registry_faults' tiny project, committed, its MLflow store git-ignored; dvc.lock records
    the test metrics as an evaluate out (they change with every run, committed or not)."""
    make_project(root, model)
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate@classifier": {
        "cmd": "python -m stages.evaluate --task classifier",
        "outs": [{"path": "metrics/classifier.json", "hash": "md5", "md5": "0" * 32}]}}}))
    (root / ".gitignore").write_text("mlflow.db*\nmlartifacts/\n")
    git(root, "init", "-q")
    commit_all(root, "tiny project")
    return root


def register(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stages.register", "--task", "classifier"], cwd=project,
                          env={**stage_env(), **env}, check=False, capture_output=True, text=True, timeout=WAIT_S)


def decision(project: Path) -> dict:
    return read_json(project / "metrics/register/classifier.json")


def set_accuracy(project: Path, accuracy: float) -> None:
    write_json(project / "metrics/classifier.json", {"accuracy": accuracy})


@pytest.fixture
def champion(tmp_path, model_bytes):  # noqa: F811
    """A git project whose version 1 became @champion from a committed, clean run."""
    project = git_project(tmp_path / "proj", model_bytes)
    proc = register(project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert decision(project)["promoted"] is True and decision(project)["origin"] == "commit"
    commit_all(project, "results")
    return project


def test_a_committed_clean_run_promotes_and_says_where_it_came_from(champion):
    version = client_of(champion).get_model_version(NAME, "1")
    assert version.tags[ORIGIN_TAG] == "commit" and EXPERIMENT_TAG not in version.tags
    assert version.tags[BASELINE_TAG] == git(champion, "rev-parse", "HEAD~1")
    assert aliases(client_of(champion)) == {"champion": "1"}


def test_uncommitted_params_register_a_challenger_only(champion):
    set_accuracy(champion, 0.9)  # a result the pipeline writes: not what makes the tree dirty
    params = yaml.safe_load((champion / "params.yaml").read_text())
    params["register"]["margin"] = 0.01
    (champion / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    proc = register(champion)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = decision(champion)
    assert (got["version"], got["promoted"], got["origin"], got["experiment"]) == (2, False, "dirty", None)
    assert got["reason"].startswith("challenger only: uncommitted changes to params.yaml")
    assert "register.margin 0.0 -> 0.01" in got["reason"], got["reason"]
    # One log line says so (the stage's own line, naming the version and what decides).
    said = [line for line in proc.stderr.splitlines() if "challenger only" in line]
    assert len(said) == 1 and "version 2 stays @challenger" in said[0], proc.stderr[-3000:]

    client = client_of(champion)
    assert aliases(client) == {"champion": "1", "challenger": "2"}  # 0.9 beats 0.6, yet nothing moved
    version = client.get_model_version(NAME, "2")
    assert version.tags[ORIGIN_TAG] == "dirty" and "register.margin" in version.tags[PARAMS_CHANGED_TAG]
    assert [e["event"] for e in history(version)] == ["registered", "held"]

    proc = cnnpipe(champion, "promote", NAME, "--version", "2")  # the way it becomes champion
    assert proc.returncode == 0 and "version 2 is @champion: accuracy 0.9000 beats" in proc.stdout, proc.stderr
    assert [e["event"] for e in history(client.get_model_version(NAME, "2"))] == ["registered", "held", "promoted"]


def test_an_experiment_registers_a_tagged_challenger_that_promote_experiment_decides(champion):
    baseline = git(champion, "rev-parse", "HEAD")
    set_accuracy(champion, 0.5)
    proc = register(champion, DVC_EXP_NAME="dim-owl", DVC_EXP_BASELINE_REV=baseline)  # what DVC sets
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = decision(champion)
    assert (got["promoted"], got["origin"], got["experiment"]) == (False, "experiment", "dim-owl")
    assert got["reason"].startswith(f"challenger only: experiment dim-owl (from commit {baseline[:12]}")
    client = client_of(champion)
    version = client.get_model_version(NAME, got["version"])
    assert version.tags[EXPERIMENT_TAG] == "dim-owl" and version.tags[BASELINE_TAG] == baseline
    assert aliases(client) == {"champion": "1", "challenger": "2"}
    proc = cnnpipe(champion, "lineage", f"{NAME}/2")
    assert proc.returncode == 0 and "  from:             dim-owl, params changed: none\n" in proc.stdout, proc

    # Through the gates: 0.5 does not beat the champion's 0.6, so it is refused and recorded.
    proc = cnnpipe(champion, "promote", NAME, "--experiment", "dim-owl")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert one_line(proc.stderr) == (f"{NAME}: not promoted: accuracy 0.5000 does not beat the champion's "
                                     "0.6000 strictly (difference -0.1000)")
    events = history(client.get_model_version(NAME, "2"))
    assert [e["event"] for e in events] == ["registered", "held", "refused"]
    assert events[-1]["challenger"]["experiment"] == "dim-owl"

    set_accuracy(champion, 0.8)
    assert register(champion, DVC_EXP_NAME="keen-elk", DVC_EXP_BASELINE_REV=baseline).returncode == 0
    proc = cnnpipe(champion, "promote", NAME, "--experiment", "keen-elk")
    assert proc.returncode == 0 and proc.stdout.startswith(f"{NAME}: version 3 is @champion"), proc.stderr
    assert aliases(client) == {"champion": "3", "previous": "1"}


@pytest.mark.parametrize("runs", [0, 2])
def test_promote_experiment_names_a_missing_or_ambiguous_experiment(champion, runs):
    for _ in range(runs):
        assert register(champion, DVC_EXP_NAME="twice").returncode == 0
    proc = cnnpipe(champion, "promote", NAME, "--experiment", "twice")
    assert proc.returncode == 1
    if runs == 0:
        assert one_line(proc.stderr) == (f"cnnpipe promote: {NAME}: no version was registered by experiment 'twice' "
                                         "(`dvc exp show` lists the experiments; did it re-run this model's stages?)")
    else:
        assert one_line(proc.stderr) == (f"cnnpipe promote: {NAME}: versions 2, 3 were all registered by "
                                         "experiment 'twice'; pick one with --version")
    assert aliases(client_of(champion))["champion"] == "1"


def test_register_reads_a_sharded_test_split(tmp_path, model_bytes):  # noqa: F811
    """``prepare.shard_size > 0`` writes ``test_images-00000.npy``, ... and no ``test_images.npy``."""
    project = make_project(tmp_path / "proj", model_bytes)
    data = project / "data/prepared/classification"
    rng = np.random.default_rng(1)
    for f in data.glob("test_*.npy"):
        f.unlink()
    sizes = [3, 2]
    for k, n in enumerate(sizes):
        save_array(data / f"test_images-{k:05d}.npy", rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8))
        save_array(data / f"test_labels-{k:05d}.npy", rng.integers(0, 10, n).astype(np.uint8))
    write_json(data / "meta.json", {"class_names": [f"c{i}" for i in range(10)], "shards": {"test": sizes}})

    proc = register(project)  # not a git repository: promoted through the gates, and said so
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "provenance unknown" in proc.stderr
    got = decision(project)
    assert (got["promoted"], got["origin"]) == (True, "unknown")
    client = client_of(project)
    run = client.get_run(client.get_model_version(NAME, got["version"]).run_id)
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "classification-test"  # the whole split, both shards:
    assert json.loads(dataset.dataset.profile)["features_shape"] == [5, 28, 28, 1], dataset.dataset.profile
