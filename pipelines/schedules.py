"""Scheduled pipeline runs: the training flow deployed with a cron schedule.

Each scheduled run is the training flow: DVC re-runs what changed, and the register@<task> stages
promote only through the gates. Schedules live on a running Prefect server (``cnnpipe server
start``, or a team's server): Prefect's temporary server has no scheduler. ``serve`` keeps a
process that executes the deployment's runs.

One run at a time: the deployment's concurrency limit is 1 with the CANCEL_NEW strategy. A run
that comes due while the previous one still runs is cancelled, not queued: DVC makes the next
run catch up with everything that changed, and a queue would only grow when a run takes longer
than the schedule's period.
"""

from __future__ import annotations

from pathlib import Path

from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
)
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from cnnpipe.flows.schedule import check_cron
from pipelines.training import training_flow

DEPLOYMENT = "cnnpipe-scheduled"
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def training_deployment(
    cron: str, *, project_dir: str | Path = ".", params_file: str = "params.yaml",
    timezone: str = "UTC", name: str = DEPLOYMENT,
) -> RunnerDeployment:
    """The training flow as a deployment that runs on ``cron``, one run at a time."""
    check_cron(cron, timezone)
    return training_flow.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters={"project_dir": str(Path(project_dir).resolve()), "params_file": params_file},
        concurrency_limit=ONE_AT_A_TIME,
        description="cnnpipe: scheduled retraining through DVC; promotion only through the gates",
    )


def serve(cron: str, *, api_url: str, **kwargs: str) -> None:
    """Register the scheduled deployment on the server at ``api_url`` and execute its runs until
    interrupted (the runs' own processes inherit the URL)."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        prefect_serve(training_deployment(cron, **kwargs))
