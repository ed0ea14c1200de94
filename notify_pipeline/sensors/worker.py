"""`delivery_worker_sensor`: keeps `delivery_workers` delivery_worker runs queued or in progress.

It never delivers anything itself: each run stages the inbox and delivers, for up to
`worker_max_seconds`, and when one ends (or fails, or is terminated) the next tick requests its
replacement. Runs fill numbered slots (the `notify/worker_slot` tag), so the sensor knows which
one to replace; a worker about to end gets its successor in the same slot up to
`HANDOVER_SECONDS` early, so for that minute a slot may hold two. Run keys are
`worker.<slot>.<n>`, `n` counted per slot in the cursor, so a tick evaluated twice with the same
cursor cannot launch a slot's run twice. The workers share the inbox through the ledger: staging
is locked and batches are leased, so each request is delivered once whichever worker takes it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

import dagster as dg

from notify_pipeline.jobs import ENDS_AT_TAG, OWNER_TAG, SLOT_TAG, delivery_worker
from notify_pipeline.ledger.base import owner_is_dead
from notify_pipeline.resources import DeploymentResource

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


def slot_of(run: dg.DagsterRun) -> int:
    """The slot a worker run fills; runs from before slots existed fill slot 0."""
    try:
        return int(run.tags.get(SLOT_TAG, "0"))
    except ValueError:
        return 0


def slot_needs_run(runs: list[dg.DagsterRun]) -> bool:
    """A slot wants a new run when it has none, or only one that is about to end."""
    return not runs or (len(runs) == 1 and _ending_soon(runs[0]))


def read_cursor(cursor: str | None) -> dict[int, int]:
    """Runs requested so far per slot. A bare number is the cursor of a single-worker
    deployment from before slots: slot 0's count."""
    if not cursor:
        return {}
    value = json.loads(cursor)
    if isinstance(value, int):
        return {0: value}
    return {int(slot): int(n) for slot, n in value.items()}


def write_cursor(counts: dict[int, int]) -> str:
    return json.dumps({str(slot): n for slot, n in sorted(counts.items())})


@dg.sensor(
    job=delivery_worker,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps NOTIFY_DELIVERY_WORKERS long-lived delivery_worker runs queued or in"
    " progress, one per slot; while there is one, inbox_sensor leaves the inbox to them.",
)
def delivery_worker_sensor(
    context: dg.SensorEvaluationContext, deployment: DeploymentResource
) -> dg.SensorResult | dg.SkipReason:
    _fail_dead_workers(context)
    by_slot: dict[int, list[dg.DagsterRun]] = defaultdict(list)
    for run in active_workers(context.instance):
        by_slot[slot_of(run)].append(run)
    counts = read_cursor(context.cursor)
    requests = []
    for slot in range(deployment.delivery_workers):
        if not slot_needs_run(by_slot[slot]):
            continue
        n = counts.get(slot, 0)
        requests.append(dg.RunRequest(run_key=f"worker.{slot}.{n}", tags={SLOT_TAG: str(slot)}))
        counts[slot] = n + 1
    if not requests:
        busy = ", ".join(f"slot {slot}: {runs[0].run_id} {runs[0].status.value}"
                         for slot, runs in sorted(by_slot.items()) if runs)
        return dg.SkipReason(f"every delivery worker slot is filled ({busy})")
    return dg.SensorResult(run_requests=requests, cursor=write_cursor(counts))


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
