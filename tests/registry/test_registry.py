"""Promotion gates (pure) and the registry operations against a real MLflow server: refusals
recorded with their reason, champion/previous moves, rollback, forced and concurrent promotions."""

from __future__ import annotations

import json
import math
import threading
import uuid
from pathlib import Path

import pytest
from helpers import params_with
from mlflow_server import mlflow_server  # noqa: F401  (fixture)

from cnnpipe.config import ParamsError
from cnnpipe.errors import RegistryError
from cnnpipe.registry.gates import Decision, Gate, decide_promotion, gate_for, gates
from cnnpipe.registry.lock import lock_path
from cnnpipe.registry.promotion import promote, rollback
from cnnpipe.registry.versions import EVENT_PREFIX, actor, history, register_version
from cnnpipe.taskspec import TASKS

CLASSIFIER = TASKS["classifier"]


# --------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "same", "promote", "reason"),
    [
        (0.90, None, 0.0, True, True, "no champion yet"),
        (0.80, None, 0.0, True, False, "accuracy 0.8000 is below the floor 0.8500"),
        (0.80, 0.70, 0.0, True, False, "below the floor"),  # the floor holds whatever the champion
        (0.91, 0.90, 0.0, True, True, "beats the champion's 0.9000 by +0.0100"),
        (0.90, 0.90, 0.0, True, False, "does not beat the champion's 0.9000 strictly"),  # a tie keeps it
        (0.905, 0.90, 0.01, True, False, "by at least 0.0100 (difference +0.0050)"),
        (0.92, 0.90, 0.01, True, True, "margin 0.0100"),
        (0.89, 0.90, 0.0, True, False, "difference -0.0100"),
        (0.95, 0.90, 0.0, False, False, "different test set"),
        (math.nan, None, 0.0, True, False, "no finite accuracy"),
    ],
)
def test_decide_promotion(challenger, champion, margin, same, promote, reason):
    decision = decide_promotion(
        {"accuracy": challenger}, None if champion is None else {"accuracy": champion},
        metric="accuracy", floor=0.85, margin=margin, same_test_set=same,
    )
    assert decision.promote is promote
    assert reason in decision.reason


def test_missing_metrics_refuse_or_pass_with_a_reason():
    assert decide_promotion({}, None, metric="dice", floor=0.5, margin=0).reason == \
        "challenger has no finite dice (got None)"
    assert decide_promotion({"dice": 0.6}, {}, metric="dice", floor=0.5, margin=0) == \
        Decision(True, "dice 0.6000 reaches the floor; the champion has no dice")


# --------------------------------------------------------------------------------------
# params and the task table
# --------------------------------------------------------------------------------------


def test_register_params_defaults_gates_and_errors():
    by_name = gates(params_with({"register": {"min_dice": 0.8, "margin": 0.01}}).register)
    assert list(by_name) == ["cnnpipe-classifier", "cnnpipe-transfer", "cnnpipe-localizer", "cnnpipe-unet"]
    unet = by_name["cnnpipe-unet"]
    assert (unet.floor, unet.margin, unet.task.gate_metric) == (0.8, 0.01, "dice")
    with pytest.raises(RegistryError, match="unknown model 'x'; the registered models are: cnnpipe-classifier"):
        gate_for(params_with().register, "x")
    for bad, message in [
        ({"margin": 1.5}, "register.margin: must be in [0, 1)"),
        ({"min_dice": 2}, "register.min_dice: must be in [0, 1]"),
        ({"unet_name": "cnnpipe-classifier"}, "model names must be non-empty and distinct"),
    ]:
        with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            params_with({"register": bad})


def test_gate_value_reads_nested_keys():
    transfer = TASKS["transfer"]
    assert transfer.gate_value({"fine_tuning": {"accuracy": 0.7}, "scratch": {"accuracy": 0.5}}) == 0.7
    assert transfer.gate_value({"fine_tuning": {}}) is None
    assert CLASSIFIER.gate_value({"accuracy": True}) is None


def test_lock_paths(tmp_path):
    assert lock_path(f"sqlite:///{tmp_path}/mlflow.db") == Path(f"{tmp_path}/mlflow.db.promote.lock")
    remote = lock_path("https://user:pw@mlflow.example.com:5000")
    assert remote.parent == Path.home() / ".cache" / "cnnpipe" / "locks" and "pw" not in str(remote)


# --------------------------------------------------------------------------------------
# Against a real server
# --------------------------------------------------------------------------------------


@pytest.fixture
def client(mlflow_server, monkeypatch):  # noqa: F811
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


def new_gate(floor: float = 0.8, margin: float = 0.0) -> Gate:
    return Gate(f"test-{uuid.uuid4().hex[:8]}", CLASSIFIER, floor, margin)


def new_version(client, gate: Gate, accuracy: float, test_set: str = "sha256:t1") -> str:
    """A version with the given metric (its source is a run path: no model needed here)."""
    experiment = client.get_experiment_by_name("test-registry") or client.get_experiment(
        client.create_experiment("test-registry"))
    run = client.create_run(experiment.experiment_id)
    version = register_version(
        client, f"runs:/{run.info.run_id}/model", gate, run_id=run.info.run_id, model_id=None,
        metrics={"accuracy": accuracy, "loss": 0.3}, test_set=test_set, tags={"git.commit": "abc123"},
    )
    return version.version


def rest_version(server, name: str, version: str) -> dict:
    got = server.get("model-versions/get", name=name, version=version)["model_version"]
    got["tags"] = {t["key"]: t["value"] for t in got.get("tags", [])}
    return got


def rest_aliases(server, name: str) -> dict[str, str]:
    model = server.get("registered-models/get", name=name)["registered_model"]
    return {a["alias"]: a["version"] for a in model.get("aliases", [])}


def events(server, name: str, version: str) -> list[str]:
    tags = rest_version(server, name, version)["tags"]
    return [json.loads(tags[k])["event"] for k in sorted(tags) if k.startswith(EVENT_PREFIX)]


def test_refuse_promote_and_rollback_with_history(client, mlflow_server, tmp_path):  # noqa: F811
    gate, lock = new_gate(), tmp_path / "promote.lock"
    v1 = new_version(client, gate, 0.90)
    assert rest_aliases(mlflow_server, gate.name) == {"challenger": v1}
    assert promote(client, gate, lock=lock).promote  # default: the @challenger
    assert rest_aliases(mlflow_server, gate.name) == {"champion": v1}

    v2 = new_version(client, gate, 0.88)  # worse than the champion, above the floor
    decision = promote(client, gate, v2, lock=lock)
    assert not decision.promote and "does not beat the champion's 0.9000" in decision.reason
    refused = rest_version(mlflow_server, gate.name, v2)
    assert refused["tags"]["cnnpipe.decision"] == "refused"
    assert refused["tags"]["cnnpipe.decision.reason"] == decision.reason
    assert f"refused by {actor()}: {decision.reason}" in refused["description"]
    assert rest_aliases(mlflow_server, gate.name) == {"champion": v1, "challenger": v2}

    v3 = new_version(client, gate, 0.95)
    assert promote(client, gate, v3, lock=lock).promote
    assert rest_aliases(mlflow_server, gate.name) == {"champion": v3, "previous": v1}  # @challenger was v3
    promoted = history(client.get_model_version(gate.name, v3))[-1]
    assert promoted["event"] == "promoted" and promoted["previous_champion"] == v1
    assert promoted["challenger"] == {"version": v3, "run_id": promoted["challenger"]["run_id"], "value": 0.95}
    assert promoted["champion"]["value"] == 0.9 and promoted["time"].endswith("Z")

    assert rollback(client, gate.name, lock=lock) == (v1, v3)  # @champion now, and the one it replaced
    assert rest_aliases(mlflow_server, gate.name) == {"champion": v1}  # v1 had replaced no one
    assert events(mlflow_server, gate.name, v3) == ["registered", "promoted", "rolled_back"]
    assert events(mlflow_server, gate.name, v1) == ["registered", "promoted", "demoted", "restored"]
    assert events(mlflow_server, gate.name, v2) == ["registered", "refused"]  # survives every alias move
    with pytest.raises(RegistryError, match="no @previous version to roll back to"):
        rollback(client, gate.name, lock=lock)


def test_rollback_walks_back_one_promotion(client, mlflow_server):  # noqa: F811
    gate = new_gate()
    versions = [new_version(client, gate, acc) for acc in (0.85, 0.90, 0.95)]
    for v in versions:
        assert promote(client, gate, v).promote
    assert rollback(client, gate.name) == (versions[1], versions[2])
    assert rest_aliases(mlflow_server, gate.name) == {"champion": versions[1], "previous": versions[0]}


def test_force_promotes_below_the_gate_and_says_so(client, mlflow_server):  # noqa: F811
    gate = new_gate()
    good, bad = new_version(client, gate, 0.9), new_version(client, gate, 0.5)
    promote(client, gate, good)
    decision = promote(client, gate, bad, force=True, who="alice")
    assert decision.promote and decision.reason.startswith("forced by alice (the gate said: accuracy 0.5000 is below")
    event = history(client.get_model_version(gate.name, bad))[-1]
    assert event["forced"] is True and event["actor"] == "alice"
    assert rest_aliases(mlflow_server, gate.name)["champion"] == bad


def test_different_test_set_is_refused(client):
    gate = new_gate()
    promote(client, gate, new_version(client, gate, 0.9, test_set="sha256:old"))
    decision = promote(client, gate, new_version(client, gate, 0.99, test_set="sha256:new"))
    assert not decision.promote and "different test set" in decision.reason


def test_concurrent_promotions_leave_one_consistent_champion(client, mlflow_server, tmp_path):  # noqa: F811
    gate, lock = new_gate(), tmp_path / "promote.lock"
    promote(client, gate, new_version(client, gate, 0.85), lock=lock)
    contenders = [new_version(client, gate, acc) for acc in (0.90, 0.92)]
    barrier, errors = threading.Barrier(len(contenders)), []

    def contend(version: str) -> None:
        barrier.wait()
        try:
            promote(client, gate, version, lock=lock)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=contend, args=(v,)) for v in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    aliases = rest_aliases(mlflow_server, gate.name)
    champion = aliases["champion"]
    assert champion == contenders[1]  # whichever ran first, 0.92 ends on top: 0.90 loses or is replaced
    assert events(mlflow_server, gate.name, champion)[-1] == "promoted"
    assert events(mlflow_server, gate.name, aliases["previous"])[-1] == "demoted"
