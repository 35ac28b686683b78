"""Promotion and rollback: move ``@champion`` through the gates, keep ``@previous`` for rollback,
and record every decision on the versions involved.

Concurrency: each promotion/rollback holds the registry's lock file (:mod:`cnnpipe.registry.lock`),
so two processes on one machine serialize; once it holds the lock, Ctrl-C waits until the
aliases and their records are written (:func:`~cnnpipe.registry.lock.uninterrupted`). Promoters
on different machines don't share that lock: run them through the Prefect promotion flow, whose
concurrency limit ``cnnpipe-promotion`` (``prefect gcl create cnnpipe-promotion --limit 1``)
serializes them; as a last guard every promotion re-reads ``@champion`` after moving it and
raises :class:`ConcurrentPromotion` if another one won.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnpipe.errors import ConcurrentPromotion, RegistryError
from cnnpipe.registry.gates import Decision, Gate, decide_promotion
from cnnpipe.registry.lock import exclusive, uninterrupted
from cnnpipe.registry.provenance import EXPERIMENT_TAG
from cnnpipe.registry.versions import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    actor,
    alias_version,
    history,
    record,
    resolve,
    version_metrics,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient


def _brief(version: ModelVersion | None, metric: str) -> dict[str, Any] | None:
    if version is None:
        return None
    brief = {"version": version.version, "run_id": version.run_id, "value": version_metrics(version).get(metric)}
    if experiment := version.tags.get(EXPERIMENT_TAG):
        brief["experiment"] = experiment
    return brief


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
    with exclusive(lock) if lock else contextlib.nullcontext(), uninterrupted():
        candidate = resolve(client, f"{name}/{version}" if version else f"{name}@{CHALLENGER}")
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


def hold(client: MlflowClient, gate: Gate, version: str, reason: str, *, who: str | None = None) -> Decision:
    """Leave ``version`` @challenger without judging it (an experiment or uncommitted work):
    record why, and the command that decides instead."""
    with uninterrupted():
        record(client, gate.name, version, {"event": "held", "actor": who or actor(), "reason": reason})
    return Decision(False, reason)


def rollback(
    client: MlflowClient, name: str, *, who: str | None = None, lock: Path | None = None
) -> tuple[str, str | None]:
    """Make @previous the @champion again; @previous moves to the champion *it* had replaced.

    Returns the version that is @champion now and the one it replaced (None if there was none),
    both read under the lock.
    """
    who = who or actor()
    with exclusive(lock) if lock else contextlib.nullcontext(), uninterrupted():
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
        return previous.version, champion.version if champion else None


def settle_unfinished(client: MlflowClient, name: str, version: str, *, who: str | None = None) -> bool:
    """Record ``interrupted`` on ``version`` if its registration stopped before the gate decided
    (its last event is ``registered``); it stays @challenger. Returns whether it recorded."""
    with uninterrupted():
        events = history(client.get_model_version(name, version))
        if events and events[-1]["event"] != "registered":
            return False
        record(client, name, version, {
            "event": "interrupted", "actor": who or actor(),
            "reason": f"stopped before the gate decided; it stays @challenger "
                      f"(`cnnpipe promote {name} --version {version}` decides)"})
        return True
