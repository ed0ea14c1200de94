"""The `events` asset: the landing table the delivery and provider-event paths append to.

It is not computed by an asset: each delivery batch and provider-event batch reports a
materialization of it, with the batch's counts as numeric metadata, so its asset page plots
delivery over time.
"""


from collections.abc import Mapping
from typing import Any

import dagster as dg

from notify_pipeline.run.report import limits_table

EVENTS = dg.AssetKey("events")

events = dg.AssetSpec(
    EVENTS,
    description="The landing table `notify_events.events`: one row per event per recipient"
    " (queued, reject, send, delivery, bounce, complaint, delivery_delay, failure), append-only"
    " and deduplicated by event_id. Written by delivery batches and provider-event batches;"
    " each reports its counts here.",
    group_name="analytics",
    kinds={"table"},
    metadata={"dagster/table_name": "notify_events.events"},
)

_COUNTS = ("requests", "delivered", "bounced", "failed", "ambiguous", "duplicates", "deferred",
           "events")


def events_metadata(summary: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Numeric metadata from a `BatchSummary.as_dict()`-shaped mapping (absent counts are 0)."""
    rejected: Mapping[str, int] = summary.get("rejected") or {}
    meta: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(int(summary.get(name) or 0)) for name in _COUNTS}
    meta["rejected"] = dg.MetadataValue.int(sum(rejected.values()))
    for reason, count in sorted(rejected.items()):
        meta[f"rejected_{reason}"] = dg.MetadataValue.int(int(count))
    if summary.get("batch_id"):
        meta["batch_id"] = dg.MetadataValue.text(str(summary["batch_id"]))
    if summary.get("limits"):  # sending limits and warm-up caps the batch met
        meta["sending_limits"] = dg.MetadataValue.md(limits_table(summary["limits"]))
    return meta


def report_events_materialization(context: dg.OpExecutionContext,
                                  summary: Mapping[str, Any]) -> None:
    """Record one batch's counts as a materialization of `events`."""
    context.log_event(dg.AssetMaterialization(asset_key=EVENTS, metadata=events_metadata(summary)))
