"""`provider_events_sensor`: takes verified provider notifications into the ledger, then asks
for a run that writes them to the warehouse.

Taking a notification in is staging, like the inbox sensor's: it verifies the SNS signature,
normalises the SES event and records it (with any suppression) durably in the ledger before the
queue message is deleted. The warehouse write is the run's work. Run keys count intakes, so the
same cursor always yields the same key.
"""

import json

import dagster as dg

from notify_pipeline.jobs import record_provider_events
from notify_pipeline.resources import DeploymentResource, LedgerResource, ProviderEventsResource


@dg.sensor(
    job=record_provider_events,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Verifies SES event notifications from SQS, records them, and requests a run"
    " that writes them to the warehouse.",
)
def provider_events_sensor(
    context: dg.SensorEvaluationContext,
    deployment: DeploymentResource,
    provider_events: ProviderEventsResource,
    ledger: LedgerResource,
) -> dg.SensorResult | dg.SkipReason:
    book = ledger.open()
    try:
        summary = provider_events.source(book, deployment.suppress_for).drain(max_batches=20)
    finally:
        book.close()
    cursor = json.loads(context.cursor) if context.cursor else {"intakes": 0, "events": 0}
    if summary.forged:
        context.log.warning(f"refused forged notifications: {dict(summary.forged)}")
    if not summary.events:
        return dg.SkipReason(f"no new provider events ({json.dumps(summary.as_dict())})")
    cursor["intakes"] += 1
    cursor["events"] += summary.events
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"provider-events-{cursor['intakes']}",
                tags={"notify/provider_events": str(summary.events)},
            )
        ],
        cursor=json.dumps(cursor, sort_keys=True),
    )
