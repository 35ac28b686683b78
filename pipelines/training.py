"""The training flow: dvc.yaml's stages in dependency order, each one a Prefect task that runs
it through DVC (so DVC decides what is unchanged and skips it).

Adds what DVC lacks: retries with back-off on the I/O stage, a failure hook naming the stage,
one parent MLflow run per flow run (each stage's run nests under it), and a markdown artifact
with the stage outcomes, MLflow links and the metrics table.
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
from prefect.tasks import exponential_backoff

from cnnpipe.config import load_params
from cnnpipe.flows.dvc import repro_stage, stage_order
from cnnpipe.flows.report import pipeline_report
from cnnpipe.security import redact
from cnnpipe.tracking.runs import child_runs, flow_run

IO_STAGES = frozenset({"fetch"})  # network and disk: worth retrying; a training bug is not
REPORT_KEY = "cnnpipe-training-report"


def report_stage_failure(task: Any, task_run: Any, state: Any) -> None:
    """on_failure hook: one line naming the stage (the task run's name) and its error."""
    logging.getLogger("cnnpipe").error("pipeline stage %r failed: %s", task_run.name, redact(str(state.message)))


# DVC caches the outputs: Prefect must not cache the task on top of it.
@task(task_run_name="{stage}", cache_policy=NO_CACHE, on_failure=[report_stage_failure])
def run_stage(project_dir: str, stage: str, env: dict[str, str]) -> str:
    """``dvc repro --single-item <stage>``; returns "ran", "skipped" or "restored" (raises
    :class:`cnnpipe.flows.dvc.StageFailed` naming the stage if it failed)."""
    outcome = repro_stage(project_dir, stage, env)
    outcome.raise_for_failure()
    get_run_logger().info("stage %s: %s by DVC", stage, outcome.status)
    return outcome.status


@flow(name="cnnpipe-training")
def training_flow(
    project_dir: str = ".",
    params_file: str = "params.yaml",
    io_retries: int = 2,
    retry_delay_s: float = 10.0,
) -> dict[str, str]:
    """Run every stage of ``project_dir``'s dvc.yaml; stops at the first failed stage.

    Returns stage -> "ran" | "skipped" | "restored".
    """
    root = Path(project_dir).resolve()
    params = load_params(root / params_file)
    run = get_run_context().flow_run
    io_stage = run_stage.with_options(retries=io_retries, retry_delay_seconds=exponential_backoff(retry_delay_s))
    statuses: dict[str, str] = {}
    with flow_run(params, root, name=f"pipeline {run.name}", flow_run_id=str(run.id)) as (conn, parent, env):
        error = None
        try:
            for stage in stage_order(root):
                statuses[stage] = "failed"  # until the task returns
                statuses[stage] = (io_stage if stage in IO_STAGES else run_stage)(str(root), stage, env)
        except Exception as err:
            error = str(err)
            raise
        finally:
            experiment = conn.client().get_run(parent).info.experiment_id
            create_markdown_artifact(
                key=REPORT_KEY,
                markdown=pipeline_report(
                    statuses, root / params.paths.metrics, error=error,
                    parent_url=conn.run_url(experiment, parent), stage_urls=child_runs(conn, parent),
                ),
                description="cnnpipe: stage outcomes, MLflow runs and metrics",
            )
    return statuses


if __name__ == "__main__":
    training_flow()
