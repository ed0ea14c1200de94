"""`inbox_sensor`: stages waiting requests into batches and requests one run per batch.

Run keys are `<batch id>.<attempt>`: the same batch in the same state always yields the same key,
so Dagster launches it once; a batch whose run crashed (its lease owner is dead) or that handed
messages back for a retry gets the next attempt number, and so a new run.

While a `delivery_worker` run is queued or in progress the sensor leaves the inbox to it (one
stager at a time); per-batch runs are the fallback when there is none, and what `notify process`
uses.
"""


import json

import dagster as dg

from notify_pipeline.events import utcnow
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.jobs import BATCH_TAG, deliver_batch
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.resources import DeploymentResource, InboxResource, LedgerResource
from notify_pipeline.run import stage_batches
from notify_pipeline.sensors.worker import active_worker


def batch_run_requests(inbox: Inbox, ledger: Ledger) -> list[dg.RunRequest]:
    """One run request per staged batch that no live run holds and whose retry delay passed."""
    requests = []
    now = utcnow()
    for batch_id in inbox.batches():
        status = ledger.batch_status(batch_id, now=now)
        if status.ready:
            requests.append(
                dg.RunRequest(
                    run_key=f"{batch_id}.{status.attempts}",
                    run_config={"ops": {"deliver": {"config": {"batch_id": batch_id}}}},
                    tags={BATCH_TAG: batch_id, "notify/attempt": str(status.attempts + 1)},
                )
            )
    return requests


@dg.sensor(
    job=deliver_batch,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 s: batches requests waiting in the inbox and requests one delivery run"
    " per batch (left to the delivery worker while one runs).",
)
def inbox_sensor(
    context: dg.SensorEvaluationContext,
    deployment: DeploymentResource,
    inbox: InboxResource,
    ledger: LedgerResource,
) -> dg.SensorResult | dg.SkipReason:
    worker = active_worker(context.instance)
    if worker is not None:
        return dg.SkipReason(
            f"delivery worker run {worker.run_id} is {worker.status.value}; it has the inbox"
        )
    box = inbox.open()
    staged = stage_batches(
        box,
        max_items=deployment.batch_max_size,
        max_age_seconds=deployment.batch_max_age_seconds,
    )
    book = ledger.open()
    try:
        requests = batch_run_requests(box, book)
    finally:
        book.close()
    cursor = json.loads(context.cursor) if context.cursor else {"staged_batches": 0}
    cursor["staged_batches"] += len(staged)
    if staged:
        cursor["last_batch"] = staged[-1]
    if not requests:  # the tick shows why, and the cursor still counts what was staged
        return dg.SensorResult(
            skip_reason=f"{box.waiting()} request(s) waiting; no batch ready to run",
            cursor=json.dumps(cursor, sort_keys=True),
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
