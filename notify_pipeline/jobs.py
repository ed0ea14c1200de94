"""The delivery jobs: `deliver_batch` (one staged batch, delivered, then its events recorded) and
`delivery_worker` (one long-lived run doing the same for every batch as it becomes ready).

They run in process (one step after another in the run worker): the work is I/O-bound and a
process per step would cost more than the steps themselves.
"""


import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterUserCodeProcessError
from dagster_shared.error import SerializableErrorInfo

from notify_pipeline.assets.events import report_events_materialization
from notify_pipeline.ledger.base import Ledger, current_owner
from notify_pipeline.resources import (
    DeploymentResource,
    IdentityResource,
    InboxResource,
    LedgerResource,
    RegistryResource,
    SigningResource,
    TransportResource,
    WarehouseResource,
)
from notify_pipeline.run import BatchSummary, Pipeline, flush_events, run_worker
from notify_pipeline.run.interrupts import stop_on_interrupt
from notify_pipeline.run.report import batch_line, limits_table, outcome_table

BATCH_TAG = "notify/batch"
OWNER_TAG = "notify/owner"
# When a worker run means to stop (an ISO 8601 UTC time): the sensor starts its successor a
# little before, so the hand-over leaves no gap.
ENDS_AT_TAG = "notify/ends_at"
# Which of the NOTIFY_DELIVERY_WORKERS slots a worker run fills (see sensors/worker.py).
SLOT_TAG = "notify/worker_slot"


class BatchConfig(dg.Config):
    batch_id: str


@dg.op(description="Parse, authenticate, apply policy, sign and hand off every request in a batch.")
def deliver(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    deployment: DeploymentResource,
    registry: RegistryResource,
    identity: IdentityResource,
    signing: SigningResource,
    transport: TransportResource,
    ledger: LedgerResource,
    inbox: InboxResource,
) -> dg.Output[dict[str, Any]]:
    book = ledger.open()
    try:
        pipeline = build_pipeline(book, deployment, registry, identity, signing, transport)
        with pipeline.transport:
            summary = pipeline.process_batch(
                inbox.open(), config.batch_id, owner=current_owner(context.run_id)
            )
    finally:
        book.close()
    _tag_run(context, summary)
    report_events_materialization(context, summary.as_dict())
    return dg.Output(summary.as_dict(), metadata=_metadata(summary))


def build_pipeline(
    book: Ledger,
    deployment: DeploymentResource,
    registry: RegistryResource,
    identity: IdentityResource,
    signing: SigningResource,
    transport: TransportResource,
) -> Pipeline:
    """The one way a run builds its pipeline, so both delivery jobs behave the same."""
    return Pipeline(
        registry=registry.load(),
        domains=replace(deployment.domains,
                        custom=signing.domain_check(via_ses=deployment.via_ses)),
        verifier=identity.verifier(),
        ledger=book,
        signer_for=signing.signer_for,
        transport=transport.transport(book),
        lease_seconds=deployment.claim_lease_seconds,
        retry_after_seconds=deployment.provider_retry_seconds,
        max_message_attempts=deployment.max_message_attempts,
        recipient_retry_for=deployment.recipient_retry_for,
        suppress_for=deployment.suppress_for,
        max_request_bytes=deployment.max_request_bytes,
        limits=deployment.sending_limits,
    )


@dg.op(
    description="Stage the inbox and deliver every ready batch as it comes, for up to"
    " `worker_max_seconds`; one more owner under the ledger's leases, like a deliver_batch run.",
)
def work_inbox(
    context: dg.OpExecutionContext,
    deployment: DeploymentResource,
    registry: RegistryResource,
    identity: IdentityResource,
    signing: SigningResource,
    transport: TransportResource,
    ledger: LedgerResource,
    inbox: InboxResource,
    warehouse: WarehouseResource,
) -> dg.Output[dict[str, Any]]:
    owner = current_owner(context.run_id)
    # The sensors tell a live worker from one whose process died without ending its run.
    ends_at = datetime.now(UTC) + timedelta(seconds=deployment.worker_max_seconds)
    context.instance.add_run_tags(context.run_id, {OWNER_TAG: owner,
                                                   ENDS_AT_TAG: ends_at.isoformat("T", "seconds")})

    def log_batch(summary: BatchSummary) -> None:
        context.log.info(batch_line(summary))
        report_events_materialization(context, summary.as_dict())

    stop = threading.Event()
    with stop_on_interrupt(stop):
        totals = run_worker(
            inbox=inbox.open(),
            open_ledger=ledger.open,
            make_pipeline=lambda book: build_pipeline(
                book, deployment, registry, identity, signing, transport
            ),
            warehouse=warehouse.open(),
            owner=owner,
            max_items=deployment.batch_max_size,
            max_age_seconds=deployment.batch_max_age_seconds,
            poll_seconds=deployment.worker_poll_seconds,
            max_seconds=deployment.worker_max_seconds,
            on_batch=log_batch,
            current_registry=registry.load,
            stop=stop,
        )
    data = totals.as_dict()
    meta: dict[str, Any] = {
        "outcomes": dg.MetadataValue.md(outcome_table(totals))
    }
    meta.update(
        {key: dg.MetadataValue.int(value) for key, value in data.items() if isinstance(value, int)}
    )
    meta["rejected_by_reason"] = dg.MetadataValue.json(data["rejected"])
    meta["deferred_by_reason"] = dg.MetadataValue.json(data["deferred_by"])
    if stop.is_set() and _terminating(context):
        context.log.info(f"outcomes of this run before it was terminated:\n{outcome_table(totals)}")
        raise _terminated("Terminated on request. The batch in hand was finished first; nothing"
                          " was lost.")
    if stop.is_set():
        context.log.info("stopped on request after the batch in hand; nothing was lost")
    return dg.Output(data, metadata=meta)


def _terminated(sentence: str) -> DagsterUserCodeProcessError:
    """A step failure that reads as one sentence, with no stack trace.

    A run that was asked to terminate ends CANCELED only if a step fails; one that finishes its
    step ends SUCCESS. Any ordinary exception would show the UI a stack trace, though nothing went
    wrong. Dagster reports the error info that a `DagsterUserCodeProcessError` carries as given,
    so the step's failure is the sentence alone (`tests/test_up.py` pins this on upgrades).
    """
    info = SerializableErrorInfo(message=sentence, stack=[], cls_name="Terminated")
    error: DagsterUserCodeProcessError = DagsterUserCodeProcessError.from_error_info(  # type: ignore[no-untyped-call]
        info)
    return error


def _terminating(context: dg.OpExecutionContext) -> bool:
    """Whether someone asked Dagster to terminate this run (the UI's Terminate button)."""
    run = context.instance.get_run_by_id(context.run_id)
    return run is not None and run.status is dg.DagsterRunStatus.CANCELING


@dg.op(description="Copy the batch's events from the ledger outbox into the warehouse.")
def record_events(
    context: dg.OpExecutionContext,
    summary: dict[str, Any],
    ledger: LedgerResource,
    warehouse: WarehouseResource,
) -> dg.Output[int]:
    return _flush(context, ledger, warehouse)


@dg.op(description="Copy provider events waiting in the ledger outbox into the warehouse.")
def flush_outbox(
    context: dg.OpExecutionContext, ledger: LedgerResource, warehouse: WarehouseResource
) -> dg.Output[int]:
    written = _flush(context, ledger, warehouse)
    report_events_materialization(context, {"events": written.value})
    return written


def _flush(
    context: dg.OpExecutionContext, ledger: LedgerResource, warehouse: WarehouseResource
) -> dg.Output[int]:
    book = ledger.open()
    try:
        written = flush_events(book, warehouse.open())
    finally:
        book.close()
    context.log.info(f"{written} new event(s) written to the warehouse")
    return dg.Output(written, metadata={"events_written": written})


def _metadata(summary: BatchSummary) -> dict[str, Any]:
    data = summary.as_dict()
    meta: dict[str, Any] = {
        "outcomes": dg.MetadataValue.md(outcome_table(summary))
    }
    meta.update({
        key: dg.MetadataValue.int(value)
        for key, value in data.items()
        if isinstance(value, int) and not isinstance(value, bool)
    })
    meta["batch_id"] = dg.MetadataValue.text(summary.batch_id)
    meta["rejected_by_reason"] = dg.MetadataValue.json(data["rejected"])
    meta["deferred_by_reason"] = dg.MetadataValue.json(data["deferred_by"])
    meta["stage_seconds"] = dg.MetadataValue.json(data["stage_seconds"])
    if summary.limits:
        meta["sending_limits"] = dg.MetadataValue.md(limits_table(summary.limits))
    if summary.reject_examples:
        meta["reject_examples"] = dg.MetadataValue.md(
            "\n".join(f"- `{line}`" for line in summary.reject_examples)
        )
    return meta


def _tag_run(context: dg.OpExecutionContext, summary: BatchSummary) -> None:
    """Counts as run tags too, so the runs list shows outcomes without opening each run."""
    tags = {
        "notify/delivered": str(summary.delivered),
        "notify/rejected": str(sum(summary.rejected.values())),
        "notify/failed": str(summary.failed + summary.ambiguous),
        "notify/duplicates": str(summary.duplicates),
        "notify/deferred": str(summary.deferred),
    }
    context.instance.add_run_tags(context.run_id, tags)


@dg.job(
    description="Deliver one staged batch of send requests, exactly once, and record its events.",
    executor_def=dg.in_process_executor,
    tags={"notify/kind": "delivery"},
)
def deliver_batch() -> None:
    record_events(deliver())


@dg.job(
    description="Stage the inbox and deliver every batch as it becomes ready, in one long-lived"
    " run; `delivery_worker_sensor` keeps NOTIFY_DELIVERY_WORKERS of them going.",
    executor_def=dg.in_process_executor,
    tags={"notify/kind": "worker"},
)
def delivery_worker() -> None:
    work_inbox()


@dg.job(
    description="Write provider events (delivery, bounce, complaint...) from the ledger outbox"
    " into the warehouse.",
    executor_def=dg.in_process_executor,
    tags={"notify/kind": "events"},
)
def record_provider_events() -> None:
    flush_outbox()
