"""Schedules of one run a day, keyed by its UTC day: a daemon that ticks twice for one day (a
restart, a second daemon) asks Dagster for the same run key, so the job runs once."""

from __future__ import annotations

import dagster as dg


def once_a_day(name: str, job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition,
               cron_schedule: str, description: str) -> dg.ScheduleDefinition:
    """`job` every day at `cron_schedule` (UTC), running from the start."""

    @dg.schedule(name=name, job=job, cron_schedule=cron_schedule, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING, description=description)
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        when = context.scheduled_execution_time
        return dg.RunRequest(run_key=f"{when:%Y-%m-%d}" if when else None)

    return daily
