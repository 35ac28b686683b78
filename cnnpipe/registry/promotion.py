"""The model registry: register versions, gate promotions, move aliases, keep the history.

Aliases, not the deprecated stages: ``@challenger`` is the newest registered version,
``@champion`` the one in use, ``@previous`` the champion it replaced (for rollback).
Every decision (promoted, refused, demoted, rolled back, restored) is written onto the version
as a ``cnnpipe.event.<utc time>`` tag (JSON) and as a line of its description, so the history
survives any later alias move.

Concurrency: each promotion/rollback holds an exclusive lock file for its registry (next to the
SQLite store; for a server, under ``~/.cache/cnnpipe/locks``), so two processes on one machine
serialize. Promoters on different machines don't share that lock: run them through the Prefect
promotion flow, whose concurrency limit ``cnnpipe-promotion`` (``prefect gcl create
cnnpipe-promotion --limit 1``) serializes them; as a last guard every promotion re-reads
``@champion`` after moving it and raises :class:`ConcurrentPromotion` if another one won.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cnnpipe.config import RegisterParams
from cnnpipe.errors import CnnpipeError
from cnnpipe.taskspec import TASKS, TaskSpec

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
EVENT_PREFIX = "cnnpipe.event."
METRIC_PREFIX = "cnnpipe.metric."
MAX_DESCRIPTION = 5000  # the registry's column size for a version description


class RegistryError(CnnpipeError):
    """A registry request that cannot be honoured (unknown model, no @previous, ...)."""


class ConcurrentPromotion(RegistryError):
    """Another promotion moved @champion while this one ran."""


# --------------------------------------------------------------------------------------
# Gates (one per task of cnnpipe.taskspec)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    name: str  # registered model name
    task: TaskSpec
    floor: float
    margin: float


def gates(register: RegisterParams) -> dict[str, Gate]:
    """Registered model name -> its gate, from params."""
    return {
        getattr(register, t.name_param): Gate(
            getattr(register, t.name_param), t, getattr(register, t.floor_param), register.margin
        )
        for t in TASKS.values()
    }


def gate_for(register: RegisterParams, name: str) -> Gate:
    """The gate of registered model ``name``; an unknown name lists the known ones."""
    known = gates(register)
    if name not in known:
        raise RegistryError(f"unknown model {name!r}; the registered models are: {', '.join(known)}")
    return known[name]


# --------------------------------------------------------------------------------------
# The decision (pure)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str,
    floor: float,
    margin: float,
    same_test_set: bool = True,
) -> Decision:
    """Promote iff the challenger's ``metric`` reaches ``floor`` and beats the champion's
    (measured on the same test set) by more than 0 and at least ``margin``."""
    value = challenger.get(metric)
    if value is None or not math.isfinite(value):
        return Decision(False, f"challenger has no finite {metric} (got {value!r})")
    if value < floor:
        return Decision(False, f"{metric} {value:.4f} is below the floor {floor:.4f}")
    if champion is None:
        return Decision(True, f"{metric} {value:.4f} reaches the floor {floor:.4f}; no champion yet")
    if not same_test_set:
        return Decision(False, "the champion was scored on a different test set, so the metrics "
                               "don't compare; re-evaluate it, or promote with --force")
    best = champion.get(metric)
    if best is None or not math.isfinite(best):
        return Decision(True, f"{metric} {value:.4f} reaches the floor; the champion has no {metric}")
    delta = value - best
    if delta <= 0 or delta < margin:
        need = f"by at least {margin:.4f}" if margin > 0 else "strictly"
        return Decision(False, f"{metric} {value:.4f} does not beat the champion's {best:.4f} {need} "
                               f"(difference {delta:+.4f})")
    return Decision(True, f"{metric} {value:.4f} beats the champion's {best:.4f} by {delta:+.4f} "
                          f"(margin {margin:.4f}, floor {floor:.4f})")


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
    return {k[len(METRIC_PREFIX):]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_PREFIX)}


def actor() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


# --------------------------------------------------------------------------------------
# Registry operations
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
        try:
            return client.get_model_version(name, number)
        except MlflowException:
            raise RegistryError(f"{ref}: no version {number} of model {name!r}") from None
    else:
        name, alias = ref, CHAMPION
    found = alias_version(client, name, alias)
    if found is None:
        raise RegistryError(f"{ref}: model {name!r} has no @{alias} version")
    return found


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
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already exists
        client.create_registered_model(gate.name, tags={"cnnpipe.task": gate.task.key})
    version_tags = {
        **(tags or {}),
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


def lock_path(tracking_uri: str) -> Path:
    """The promotion lock of a registry: beside a local store, else per server in the user cache."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):] + ".promote.lock")
    if parts.scheme in ("", "file"):
        return Path(parts.path) / ".promote.lock"
    digest = hashlib.sha256(f"{parts.hostname}:{parts.port}{parts.path}".encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "cnnpipe" / "locks" / f"{digest}.lock"


@contextlib.contextmanager
def exclusive(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(f"another promotion holds {path} for over {timeout_s:.0f}s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _brief(version: ModelVersion | None, metric: str) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"version": version.version, "run_id": version.run_id,
            "value": version_metrics(version).get(metric)}


def promote(
    client: MlflowClient,
    gate: Gate,
    version: str | None = None,
    *,
    force: bool = False,
    who: str | None = None,
    lock: Path | None = None,
) -> Decision:
    """Judge ``version`` (default: @challenger) against @champion and, if it passes (or
    ``force``), make it @champion and the old champion @previous. Records the decision either way."""
    name, metric = gate.name, gate.task.gate_metric
    who = who or actor()
    with exclusive(lock) if lock else contextlib.nullcontext():
        candidate = client.get_model_version(name, version) if version else resolve(client, f"{name}@{CHALLENGER}")
        champion = alias_version(client, name, CHAMPION)
        if champion is not None and champion.version == candidate.version:
            return Decision(False, f"version {candidate.version} is already @champion")
        same_test_set = champion is None or (
            champion.tags.get("cnnpipe.test_set") == candidate.tags.get("cnnpipe.test_set"))
        decision = decide_promotion(
            version_metrics(candidate), version_metrics(champion) if champion else None,
            metric=metric, floor=gate.floor, margin=gate.margin, same_test_set=same_test_set,
        )
        if force and not decision.promote:
            decision = Decision(True, f"forced by {who} (the gate said: {decision.reason})")
        event = {
            "actor": who, "forced": force, "metric": metric, "floor": gate.floor, "margin": gate.margin,
            "challenger": _brief(candidate, metric), "champion": _brief(champion, metric),
            "reason": decision.reason,
        }
        if not decision.promote:
            record(client, name, candidate.version, {"event": "refused", **event})
            return decision

        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS, champion.version)
        now = alias_version(client, name, CHAMPION)
        if now is None or now.version != candidate.version:
            raise ConcurrentPromotion(
                f"{name}: another promotion made version {now.version if now else '?'} @champion "
                f"while version {candidate.version} was being promoted; check the history and retry")
        if (challenger := alias_version(client, name, CHALLENGER)) and challenger.version == candidate.version:
            client.delete_registered_model_alias(name, CHALLENGER)
        record(client, name, candidate.version, {
            "event": "promoted", "previous_champion": champion.version if champion else None, **event})
        if champion is not None:
            record(client, name, champion.version, {
                "event": "demoted", "actor": who, "reason": f"@previous: replaced by version {candidate.version}"})
        return decision


def rollback(client: MlflowClient, name: str, *, who: str | None = None, lock: Path | None = None) -> str:
    """Make @previous the @champion again; @previous moves to the champion *it* had replaced.

    Returns the version that is @champion now.
    """
    who = who or actor()
    with exclusive(lock) if lock else contextlib.nullcontext():
        previous = alias_version(client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name}: no @previous version to roll back to")
        champion = alias_version(client, name, CHAMPION)
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        # Walk the history back one step: whom did `previous` replace when it was promoted?
        promoted = [e for e in history(previous) if e["event"] == "promoted"]
        before = promoted[-1].get("previous_champion") if promoted else None
        if before and before not in (previous.version, champion.version if champion else None):
            client.set_registered_model_alias(name, PREVIOUS, before)
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
        if champion is not None:
            record(client, name, champion.version, {
                "event": "rolled_back", "actor": who, "reason": f"rolled back to version {previous.version}"})
        record(client, name, previous.version, {
            "event": "restored", "actor": who,
            "reason": f"@champion again by rollback from version {champion.version if champion else '-'}"})
        return previous.version


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
