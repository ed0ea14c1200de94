"""`delivery_worker_sensor`: keeps exactly one `delivery_worker` run queued or in progress.

It never delivers anything itself: the run stages the inbox and delivers, for up to
`worker_max_seconds`, and when it ends (or fails, or is terminated) the next tick requests the next
one. Run keys are `worker.<n>`, `n` counted in the cursor, so a tick evaluated twice with the same
cursor cannot launch two.
"""

import dagster as dg

from notify_pipeline.jobs import OWNER_TAG, delivery_worker
from notify_pipeline.ledger.base import owner_is_dead

ACTIVE_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def active_worker(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """The delivery_worker run that is queued, starting or running, if there is one.

    A started run whose process is certainly gone (killed along with `dagster dev`, say) does not
    count: nothing would ever end it, and every later worker would wait for it forever.
    """
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=delivery_worker.name, statuses=list(ACTIVE_STATUSES))
    )
    for run in runs:
        owner = run.tags.get(OWNER_TAG)
        if owner is None or not owner_is_dead(owner):
            return run
    return None


@dg.sensor(
    job=delivery_worker,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one long-lived delivery_worker run queued or in progress; while there is"
    " one, inbox_sensor leaves the inbox to it.",
)
def delivery_worker_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    run = active_worker(context.instance)
    if run is not None:
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
