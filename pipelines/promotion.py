"""The promotion flow: judge each model's @challenger against its @champion through the gates
in params, and record a markdown artifact of the decisions.

Run through one Prefect server, the ``cnnpipe-promotion`` concurrency limit (create it with
``prefect gcl create cnnpipe-promotion --limit 1``) serializes promotions started anywhere;
without that limit the slot is not enforced and the registry's local lock still applies.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency

from cnnpipe.config import load_params
from cnnpipe.flows.report import promotion_report
from cnnpipe.registry.gates import Gate, gate_for, gates
from cnnpipe.registry.lock import lock_path
from cnnpipe.registry.promotion import promote
from cnnpipe.registry.versions import CHALLENGER, alias_version
from cnnpipe.tracking.connection import Connection, connect

CONCURRENCY_LIMIT = "cnnpipe-promotion"


@task(task_run_name="promote {name}")
def promote_challenger(conn: Connection, gate: Gate, name: str, force: bool) -> dict[str, object]:
    """Promote ``name@challenger`` through its gate; a model without one is reported, not failed."""
    client = conn.client()
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is None:
        return {"version": None, "promoted": False, "reason": "no @challenger to promote"}
    decision = promote(client, gate, challenger.version, force=force, lock=lock_path(conn.uri))
    return {"version": challenger.version, "promoted": decision.promote, "reason": decision.reason}


@flow(name="cnnpipe-promotion")
def promotion_flow(
    names: list[str] | None = None,
    force: bool = False,
    project_dir: str = ".",
    params_file: str = "params.yaml",
) -> dict[str, dict[str, object]]:
    """Promote the @challenger of each named model (default: all four)."""
    root = Path(project_dir).resolve()
    params = load_params(root / params_file)
    conn = connect(params.tracking, root)
    results = {}
    with concurrency(CONCURRENCY_LIMIT, occupy=1, strict=False):
        for name in names or list(gates(params.register)):
            results[name] = promote_challenger(conn, gate_for(params.register, name), name, force)
    create_markdown_artifact(
        key="cnnpipe-promotion-report",
        markdown=promotion_report(results),
        description="cnnpipe: promotion decisions",
    )
    return results
