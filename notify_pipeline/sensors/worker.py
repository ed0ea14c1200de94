"""`delivery_worker_sensor`: keeps one `delivery_worker` run queued or in progress.

It never delivers anything itself: the run stages the inbox and delivers, for up to
`worker_max_seconds`, and when it ends (or fails, or is terminated) the next tick requests the
next one. A worker about to end gets its successor up to `HANDOVER_SECONDS` early, so for that
minute two may run. Run keys are `worker.<n>`, `n` counted in the cursor, so a tick evaluated
twice with the same cursor cannot launch two.
"""

from datetime import UTC, datetime

import dagster as dg

from notify_pipeline.jobs import ENDS_AT_TAG, OWNER_TAG, delivery_worker
from notify_pipeline.ledger.base import owner_is_dead

ACTIVE_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


# A successor needs a sensor tick and a run start (~5-15 s here); starting it this long before
# its predecessor means to stop leaves no gap. The two overlap safely: staging is locked and
# batches are leased.
HANDOVER_SECONDS = 60.0


def active_workers(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """The delivery_worker runs that are queued, starting or running.

    A started run whose process is certainly gone (killed along with `dagster dev`, say) does not
    count: nothing would ever end it, and every later worker would wait for it forever.
    """
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=delivery_worker.name, statuses=list(ACTIVE_STATUSES))
    )
    return [run for run in runs
            if (owner := run.tags.get(OWNER_TAG)) is None or not owner_is_dead(owner)]


def active_worker(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A delivery_worker run that is queued, starting or running, if there is one."""
    runs = active_workers(instance)
    return runs[0] if runs else None


def _ending_soon(run: dg.DagsterRun) -> bool:
    ends_at = run.tags.get(ENDS_AT_TAG)
    if ends_at is None:
        return False
    left = datetime.fromisoformat(ends_at) - datetime.now(UTC)
    return left.total_seconds() <= HANDOVER_SECONDS


@dg.sensor(
    job=delivery_worker,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one long-lived delivery_worker run queued or in progress; while there is"
    " one, inbox_sensor leaves the inbox to it.",
)
def delivery_worker_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    live = active_workers(context.instance)
    if len(live) > 1 or (live and not _ending_soon(live[0])):
        run = live[0]
        return dg.SkipReason(f"delivery worker run {run.run_id} is {run.status.value}")
    _fail_dead_workers(context)
    n = int(context.cursor or 0)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"worker.{n}")], cursor=str(n + 1)
    )


def _fail_dead_workers(context: dg.SensorEvaluationContext) -> None:
    """Mark runs whose worker process died as failed, so the UI stops showing them in progress."""
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name=delivery_worker.name, statuses=[dg.DagsterRunStatus.STARTED]
        )
    )
    for run in runs:
        owner = run.tags.get(OWNER_TAG)
        if owner is not None and owner_is_dead(owner):
            context.log.warning(f"delivery worker run {run.run_id} has no live process ({owner})")
            context.instance.report_run_failed(run, message=f"worker process gone: {owner}")
