"""Registered model versions: register one (@challenger), find one by alias or number, and keep
its history on it.

Aliases, not the deprecated stages: ``@challenger`` is the newest registered version,
``@champion`` the one in use, ``@previous`` the champion it replaced (for rollback).
Every decision (promoted, refused, demoted, rolled back, restored) is written onto the version
as a ``cnnpipe.event.<utc time>`` tag (JSON) and as a line of its description, so the history
survives any later alias move.
"""

from __future__ import annotations

import contextlib
import getpass
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cnnpipe.errors import RegistryError
from cnnpipe.registry.gates import Gate
from cnnpipe.registry.lock import uninterrupted
from cnnpipe.registry.provenance import EXPERIMENT_TAG, ORIGIN_TAG, PARAMS_CHANGED_TAG

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
EVENT_PREFIX = "cnnpipe.event."
METRIC_PREFIX = "cnnpipe.metric."
MAX_DESCRIPTION = 5000  # the registry's column size for a version description


# --------------------------------------------------------------------------------------
# History on the version
# --------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def record(client: MlflowClient, name: str, version: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``event`` onto the version: a time-keyed tag (JSON), the latest-decision tags, and
    a line appended to the description. Returns the event with its time."""
    now = _now()
    event = {"time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"), **event}
    key = EVENT_PREFIX + now.strftime("%Y%m%dT%H%M%S.%fZ")
    client.set_model_version_tag(name, version, key, json.dumps(event, sort_keys=True))
    client.set_model_version_tag(name, version, "cnnpipe.decision", event["event"])
    client.set_model_version_tag(name, version, "cnnpipe.decision.reason", event.get("reason", ""))
    line = f"{event['time']} {event['event']} by {event.get('actor', '?')}: {event.get('reason', '')}"
    description = client.get_model_version(name, version).description or ""
    lines = [*description.splitlines(), line]
    while len("\n".join(lines)) > MAX_DESCRIPTION and len(lines) > 1:
        lines.pop(0)  # the tags keep every event; the description keeps the newest
    client.update_model_version(name, version, description="\n".join(lines))
    return event


def history(version: ModelVersion) -> list[dict[str, Any]]:
    """The version's recorded events, oldest first."""
    return [json.loads(version.tags[k]) for k in sorted(version.tags) if k.startswith(EVENT_PREFIX)]


def version_metrics(version: ModelVersion) -> dict[str, float]:
    """The metrics registered with the version (its ``cnnpipe.metric.*`` tags)."""
    return {k[len(METRIC_PREFIX):]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_PREFIX)}


def actor() -> str:
    """Who acts, for the history: the login name, or "unknown"."""
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


# --------------------------------------------------------------------------------------
# Finding and registering versions
# --------------------------------------------------------------------------------------


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``name@alias``, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def resolve(client: MlflowClient, ref: str) -> ModelVersion:
    """``name``, ``name@alias`` or ``name/version`` -> that version (a bare name means @champion)."""
    from mlflow.exceptions import MlflowException

    if "@" in ref:
        name, alias = ref.split("@", 1)
    elif "/" in ref:
        name, number = ref.rsplit("/", 1)
        if not number.isdigit():
            raise RegistryError(f"{ref}: {number!r} is not a version number (versions are 1, 2, ...)")
        try:
            return client.get_model_version(name, number)
        except MlflowException:
            raise RegistryError(f"{ref}: no version {number} of model {name!r}") from None
    else:
        name, alias = ref, CHAMPION
    found = alias_version(client, name, alias)
    if found is None:
        try:
            client.get_registered_model(name)
        except MlflowException:  # a misspelt name is not "a model without that alias"
            known = sorted(m.name for m in client.search_registered_models(max_results=50))
            raise RegistryError(f"{ref}: no registered model named {name!r} (registered: "
                                f"{', '.join(known) or 'none'})") from None
        raise RegistryError(f"{ref}: model {name!r} has no @{alias} version")
    return found


def experiment_version(client: MlflowClient, name: str, experiment: str) -> ModelVersion:
    """The one version of ``name`` registered by DVC experiment ``experiment``."""
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        found += [str(v.version) for v in page if v.tags.get(EXPERIMENT_TAG) == experiment]
        token = page.token
        if not token:
            break
    if not found:
        raise RegistryError(f"{name}: no version was registered by experiment {experiment!r} "
                            "(`dvc exp show` lists the experiments; did it re-run this model's stages?)")
    if len(found) > 1:
        numbers = ", ".join(sorted(found, key=int))
        raise RegistryError(f"{name}: versions {numbers} were all registered by experiment {experiment!r}; "
                            "pick one with --version")
    return client.get_model_version(name, found[0])  # with its aliases, which search leaves out


def register_version(
    client: MlflowClient,
    model_uri: str,
    gate: Gate,
    *,
    run_id: str,
    model_id: str | None,
    metrics: Mapping[str, float],
    test_set: str,
    tags: Mapping[str, str] | None = None,
) -> ModelVersion:
    """Register ``model_uri`` (logged model ``model_id``) as a new version of ``gate.name`` and
    alias it @challenger.

    The version carries its metrics (``cnnpipe.metric.*``), the test-set hash they were measured
    on, and the given lineage tags, so comparing and tracing it needs no other lookup.
    """
    with uninterrupted():  # the version, its alias and its first event: all or nothing
        return _register(client, model_uri, gate, run_id, model_id, metrics, test_set, tags or {})


def _register(
    client: MlflowClient, model_uri: str, gate: Gate, run_id: str, model_id: str | None,
    metrics: Mapping[str, float], test_set: str, tags: Mapping[str, str],
) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already exists
        client.create_registered_model(gate.name, tags={"cnnpipe.task": gate.task.key})
    version_tags = {
        **tags,
        "cnnpipe.task": gate.task.key,
        "cnnpipe.kind": gate.task.kind,
        "cnnpipe.gate_metric": gate.task.gate_metric,
        "cnnpipe.test_set": test_set,
        **{f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()},
    }
    version = client.create_model_version(
        gate.name, model_uri, run_id=run_id, tags=version_tags, model_id=model_id)
    client.set_registered_model_alias(gate.name, CHALLENGER, version.version)
    record(client, gate.name, version.version, {
        "event": "registered", "actor": actor(), "run_id": run_id, "reason": "new @challenger",
        "metric": gate.task.gate_metric, "value": metrics.get(gate.task.gate_metric),
    })
    return client.get_model_version(gate.name, version.version)


def describe(client: MlflowClient, ref: str) -> dict[str, Any]:
    """Everything known about ``ref``'s origin: version, aliases, git commit, DVC hashes, params,
    MLflow run (and parent run), Prefect flow run, and the decision history."""
    from mlflow.exceptions import MlflowException

    version = resolve(client, ref)
    aliases = list(getattr(version, "aliases", []) or [])
    out: dict[str, Any] = {
        "name": version.name,
        "version": version.version,
        "aliases": aliases,
        "source": version.source,
        "run_id": version.run_id,
        "git_commit": version.tags.get("git.commit"),
        "git_dirty": version.tags.get("git.dirty"),
        "origin": version.tags.get(ORIGIN_TAG),  # commit | experiment | dirty | unknown
        "experiment": version.tags.get(EXPERIMENT_TAG),
        "params_changed": json.loads(version.tags.get(PARAMS_CHANGED_TAG) or "{}"),
        "dvc": {k[4:]: v for k, v in sorted(version.tags.items()) if k.startswith("dvc.")},
        "prefect_flow_run_id": version.tags.get("prefect.flow_run_id"),
        "test_set": version.tags.get("cnnpipe.test_set"),
        "metrics": version_metrics(version),
        "params": {},
        "parent_run_id": None,
        "history": history(version),
    }
    if version.run_id:
        with contextlib.suppress(MlflowException):  # a deleted run keeps the version's own tags
            run = client.get_run(version.run_id)
            out["params"] = dict(sorted(run.data.params.items()))
            out["parent_run_id"] = run.data.tags.get("mlflow.parentRunId")
    return out
