"""Scheduled pipeline runs: the training flow deployed with a cron schedule.

Each scheduled run is the training flow: DVC re-runs what changed, and the register@<task> stages
promote only through the gates. Schedules live on a Prefect server (``prefect server start``,
then ``PREFECT_API_URL=http://127.0.0.1:4200/api``); ``serve`` keeps a process that executes them.
"""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from cnnpipe.flows.schedule import check_cron
from pipelines.training import training_flow

DEPLOYMENT = "cnnpipe-scheduled"


def training_deployment(
    cron: str, *, project_dir: str | Path = ".", params_file: str = "params.yaml",
    timezone: str = "UTC", name: str = DEPLOYMENT,
) -> RunnerDeployment:
    """The training flow as a deployment that runs on ``cron``."""
    check_cron(cron, timezone)
    return training_flow.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters={"project_dir": str(Path(project_dir).resolve()), "params_file": params_file},
        description="cnnpipe: scheduled retraining through DVC; promotion only through the gates",
    )


def serve(cron: str, **kwargs: str) -> None:
    """Register the scheduled deployment and execute its runs until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(training_deployment(cron, **kwargs))
