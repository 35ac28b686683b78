"""train.strategy: the choice is validated, and two workers on 127.0.0.1 train the classifier
(MultiWorkerMirroredStrategy via TF_CONFIG) as well as one does, only the chief writing files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import params_with

from cnnpipe.config import ParamsError
from cnnpipe.errors import CnnpipeError
from cnnpipe.training import _keras_compat, distribute
from cnnpipe.training.distribute import get_strategy, is_chief, task_is_chief

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")


def test_strategy_param_lists_the_choices() -> None:
    assert params_with().train.strategy == "default"
    assert params_with({"train": {"strategy": "multi_worker"}}).train.strategy == "multi_worker"
    with pytest.raises(ParamsError, match="train.strategy.*'tpu'.*default, mirrored, multi_worker"):
        params_with({"train": {"strategy": "tpu"}})


def test_chief_is_read_from_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and task_is_chief(None)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert task_is_chief({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    assert not task_is_chief({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    with_chief = {**cluster, "chief": ["127.0.0.1:3"]}
    assert not task_is_chief({"cluster": with_chief, "task": {"type": "worker", "index": 0}})
    assert task_is_chief({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    # Without the multi-worker strategy in this process, a stray TF_CONFIG changes nothing.
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert is_chief()
    monkeypatch.setattr(distribute, "_MULTI_WORKER", True)
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ParamsError, match="TF_CONFIG"):
        is_chief()


def test_multi_worker_without_tf_config_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ParamsError, match="TF_CONFIG"):
        get_strategy("multi_worker")
    with pytest.raises(ParamsError, match="choose one of"):
        get_strategy("nccl")


def test_keras_compat_was_written_for_the_installed_keras() -> None:
    """Fails on a Keras upgrade: re-check cnnpipe/training/_keras_compat.py (keras-team/keras#20585)
    against the new Keras, then update its WRITTEN_FOR."""
    import keras
    from keras.src import tree  # noqa: F401 - the private API the workarounds use still exists
    from keras.src.backend.tensorflow import trainer

    assert keras.__version__.startswith(_keras_compat.WRITTEN_FOR), (
        f"keras {keras.__version__} installed; _keras_compat.py was written for {_keras_compat.WRITTEN_FOR}x"
    )
    assert callable(trainer.reduce_per_replica) and callable(trainer._collective_all_reduce_multi_worker)
    assert callable(keras.Model._symbolic_build)
    _keras_compat.check_keras_version()


def test_keras_compat_refuses_another_keras_with_one_clear_line() -> None:
    with pytest.raises(CnnpipeError, match=r"keras 3\.16\.0 is installed.*written for keras 3\.15\.x.*WRITTEN_FOR"):
        _keras_compat.check_keras_version("3.16.0")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(out: Path, strategy: str, tf_config: dict | None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONHASHSEED": "0"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    out.mkdir(parents=True)
    return subprocess.Popen([sys.executable, str(WORKER), str(out), strategy], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, what: str) -> None:
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"{what} timed out:\n{output[-3000:]}") from None
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{output[-3000:]}"


def test_two_workers_match_one(tmp_path: Path) -> None:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs = {
        "single": _start(tmp_path / "single", "default", None),
        **{f"worker{i}": _start(tmp_path / f"worker{i}", "multi_worker",
                                {"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)},
    }
    for name, proc in procs.items():
        _wait(proc, name)
    single, chief, other = (json.loads((tmp_path / n / "result.json").read_text())
                            for n in ("single", "worker0", "worker1"))
    # Synchronous data parallelism: the gradients are all-reduced, so both workers end with the
    # same trainable weights (BatchNorm's moving statistics follow each worker's own half-batches).
    assert chief["weights"] == other["weights"] and len(chief["weights"]) >= 8
    assert chief["weights"] != single["weights"]  # it really was another run
    assert chief["epochs_run"] == single["epochs_run"] == 1
    # The same quality as one worker (same global batch, so the same number of steps).
    assert single["val_accuracy"] >= 0.8 and chief["val_accuracy"] >= 0.8, (single, chief)
    assert abs(chief["val_accuracy"] - single["val_accuracy"]) <= 0.1, (single, chief)
    # Only the chief writes: its curves exist; the other worker's output paths stay untouched.
    assert (tmp_path / "worker0" / "plots" / "history" / "classifier.csv").exists()
    assert not (tmp_path / "worker1" / "plots").exists() and not (tmp_path / "worker1" / "models").exists()
