"""`run_retention`: deletes finished runs older than `NOTIFY_RUN_RETENTION_DAYS`, daily.

Dagster's instance settings purge old sensor and schedule ticks, but nothing purges runs: the
runs and event-log tables only grow. A run still queued or in progress is never deleted.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from notify_pipeline.resources import DeploymentResource
from notify_pipeline.schedules import once_a_day

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
            dg.DagsterRunStatus.CANCELED]
# Deleted per query, so a long backlog is worked through without loading it all.
PAGE = 500


def delete_runs_before(instance: dg.DagsterInstance, cutoff: datetime) -> int:
    """Delete every finished run created before `cutoff` with its event log; how many."""
    deleted = 0
    while records := instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED, created_before=cutoff), limit=PAGE):
        for record in records:
            instance.delete_run(record.dagster_run.run_id)
        deleted += len(records)
    return deleted


@dg.op(description="Delete finished runs (and their event logs) older than"
       " NOTIFY_RUN_RETENTION_DAYS; 0 keeps every run.")
def purge_old_runs(context: dg.OpExecutionContext, deployment: DeploymentResource) -> int:
    days = deployment.run_retention_days
    if not days:
        context.log.info("NOTIFY_RUN_RETENTION_DAYS is 0: every run is kept")
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=days)
    deleted = delete_runs_before(context.instance, cutoff)
    context.log.info(f"deleted {deleted} finished run(s) created before {cutoff:%Y-%m-%d %H:%M}")
    return deleted


@dg.job(description="Delete finished runs older than NOTIFY_RUN_RETENTION_DAYS.",
        executor_def=dg.in_process_executor, tags={"notify/kind": "maintenance"})
def run_retention() -> None:
    purge_old_runs()


run_retention_daily = once_a_day(
    "run_retention_daily", run_retention, "15 3 * * *",
    "Every day at 03:15 UTC: delete finished runs past their retention.")
