"""The training flow: the stale stages of dvc.yaml in dependency order, each one a Prefect task
that runs it through DVC (``cnnpipe/flows/dvc.py``), so dvc.lock and the cache stay the truth.

DVC is asked once, in-process, which stages are stale; a no-op run starts no stage process and
opens no MLflow run. What the flow adds: the project's run lock for the whole flow (no two runs
in one checkout), each stage's output streamed line by line into the Prefect logs, a timeout per
stage (``orchestrate`` in params.yaml) after which it is killed and named, DVC's keep-going
semantics (a failed stage stops only what depends on it), one parent MLflow run per flow run
that ran something (each stage's run nests under it), and a markdown report artifact.

Retries: ``fetch`` owns them (``fetch.retries``, with back-off, never on a permanent 4xx); the
flow does not retry a stage on top of that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.logging import get_run_logger

from cnnpipe.config import load_params
from cnnpipe.flows.dvc import StageFailed, plan, run_stage, still_changed
from cnnpipe.flows.lock import run_lock
from cnnpipe.flows.report import UPSTREAM_FAILED, pipeline_report
from cnnpipe.security import redact
from cnnpipe.tracking.runs import child_runs, flow_run

REPORT_KEY = "cnnpipe-training-report"


class PipelineFailed(StageFailed):
    """One or more stages failed or timed out; the others that could run, ran."""


def report_stage_failure(task: Any, task_run: Any, state: Any) -> None:
    """on_failure hook: one line naming the stage (the task run's name) and its error."""
    logging.getLogger("cnnpipe").error("pipeline stage %r failed: %s", task_run.name, redact(str(state.message)))


# DVC caches the outputs: Prefect must not cache the task on top of it. No task retries: fetch
# retries its downloads itself, and a training bug is not worth a second try.
@task(task_run_name="{stage}", cache_policy=NO_CACHE, on_failure=[report_stage_failure])
def dvc_stage(project_dir: str, stage: str, env: dict[str, str], timeout_s: float, check: bool) -> str:
    """Run ``stage`` through DVC, streaming its output; returns "ran", "restored" or "skipped"
    (``check``: DVC found it unchanged once its upstream re-ran). Raises :class:`StageFailed`
    naming the stage if it failed or timed out."""
    logger = get_run_logger()
    if check and not still_changed(project_dir, stage):
        logger.info("stage %s: unchanged after its upstream re-ran, skipped by DVC", stage)
        return "skipped"
    outcome = run_stage(project_dir, stage, env, timeout_s=timeout_s, on_line=lambda ln: logger.info("%s", redact(ln)))
    outcome.raise_for_failure()
    logger.info("stage %s: %s by DVC", stage, outcome.status)
    return outcome.status


@flow(name="cnnpipe-training")
def training_flow(project_dir: str = ".", params_file: str = "params.yaml") -> dict[str, str]:
    """Run the stale stages of ``project_dir``'s dvc.yaml; returns stage -> "ran" | "restored" |
    "skipped" | "probed" | "failed" | "timed out" | "not run: upstream failed (<stage>)".

    Raises :class:`PipelineFailed` (after every stage that could run has run) if any failed.
    """
    root = Path(project_dir).resolve()
    params = load_params(root / params_file)
    logger = get_run_logger()
    with run_lock(root):
        work = plan(root)
        statuses = {stage: "skipped" for stage in work.order}
        statuses.update(dict.fromkeys(work.probes, "probed"))
        if not work.stale:
            logger.info("every stage is up to date: nothing to run")
            _publish(statuses, root / params.paths.metrics)
            return statuses
        logger.info("stale stages: %s", ", ".join(work.stale))
        run = get_run_context().flow_run
        with flow_run(params, root, name=f"pipeline {run.name}", flow_run_id=str(run.id)) as (conn, parent, env):
            errors = _run_stages(work, statuses, str(root), env, params.orchestrate)
            experiment = conn.client().get_run(parent).info.experiment_id
            _publish(statuses, root / params.paths.metrics, error="\n".join(errors) or None,
                     parent_url=conn.run_url(experiment, parent), stage_urls=child_runs(conn, parent))
            if errors:
                blocked = [s for s, st in statuses.items() if st.startswith(UPSTREAM_FAILED)]
                raise PipelineFailed("; ".join(errors) + (f"; not run because of it: {', '.join(blocked)}" if blocked else ""))
    return statuses


def _run_stages(work: Any, statuses: dict[str, str], root: str, env: dict[str, str], orchestrate: Any) -> list[str]:
    """Each stale stage in order, DVC's keep-going way: a stage whose upstream failed is not
    run and says which; every other stage still runs. Returns the failures' one-line errors."""
    failed: list[str] = []
    errors: list[str] = []
    stale = set(work.stale)
    for stage in work.stale:
        broken = [s for s in failed if s in work.upstream[stage]]
        if broken:
            statuses[stage] = f"{UPSTREAM_FAILED} ({', '.join(broken)})"
            continue
        # A stage DVC itself reported changed runs; one that is stale only through its upstream
        # is asked again right before (that upstream may have rewritten the same bytes).
        check = bool(work.upstream[stage] & stale)
        state = dvc_stage(root, stage, env, orchestrate.timeout_for(stage), check, return_state=True)
        if state.is_failed():
            failed.append(stage)
            message = str(state.message or "")
            statuses[stage] = "timed out" if " timed out after " in message else "failed"
            try:
                state.result()
            except StageFailed as err:
                message = str(err)
            except Exception as err:  # noqa: BLE001  (anything else the task raised: name the stage)
                message = redact(f"stage {stage!r} failed: {err}")
            errors.append(message)
        else:
            statuses[stage] = state.result()
    return errors


def _publish(statuses: dict[str, str], metrics_dir: Path, **report: Any) -> None:
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=pipeline_report(statuses, metrics_dir, **report),
        description="cnnpipe: stage outcomes, MLflow runs and metrics",
    )


if __name__ == "__main__":
    training_flow()
