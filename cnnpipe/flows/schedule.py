"""Cron schedules for the training flow: checked, and their next run times computed by the
same code Prefect's scheduler uses (imported here only when asked: Prefect costs ~1 s)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from cnnpipe.errors import CnnpipeError


def check_cron(cron: str, timezone: str) -> None:
    """Raise a one-line :class:`CnnpipeError` unless ``cron`` in ``timezone`` is a valid schedule."""
    from prefect.server.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        reason = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)  # one line, not pydantic's report
        raise CnnpipeError(f"invalid schedule cron={cron!r} timezone={timezone!r}: {reason}") from None


def next_run_times(
    cron: str, count: int = 3, *, timezone: str = "UTC", after: datetime | None = None
) -> list[datetime]:
    """The next ``count`` start times of ``cron`` in ``timezone`` (after ``after``, default now)."""
    from prefect.server.schemas.schedules import CronSchedule

    check_cron(cron, timezone)
    return list(asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=count, start=after)))
