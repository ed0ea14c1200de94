"""The per-service tables: `service_events` and `daily_stats` (after `event_retention`)."""


from collections.abc import Iterator
from typing import Any

import dagster as dg

from notify_pipeline.analytics.access import AccessNotApplied, access_plan
from notify_pipeline.assets.events import EVENTS
from notify_pipeline.assets.partitions import GROUP, registered, services
from notify_pipeline.assets.resource import AnalyticsResource, analytics_store
from notify_pipeline.assets.retention import event_retention
from notify_pipeline.resources import RegistryResource, WarehouseResource

__all__ = ["GROUP", "daily_stats", "event_retention", "registered", "service_events"]


@dg.asset(partitions_def=services, deps=[EVENTS, event_retention], group_name=GROUP,
          kinds={"table"}, check_specs=[dg.AssetCheckSpec(
              "reporting_access", asset="service_events",
              description="In gcp, the access plan is in force: the service's reporting"
              " principals may read its table and nothing else. Locally it is only shown.")])
def service_events(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                   registry: RegistryResource, analytics: AnalyticsResource
                   ) -> Iterator[Any]:
    """The service's own event table `notify_events.events_<service id with - as _>`: exactly
    its rows of `events`, with the event columns. Analysts and Looker Studio read this; in gcp
    only the service's reporting principals may (the access plan is in the metadata)."""
    service = registered(registry, context.partition_key)
    store = analytics_store(warehouse)
    summary = store.refresh_service_events(service.id)
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(summary.rows),
        "dagster/table_name": dg.MetadataValue.text(summary.table),
        "rows_by_event_type": dg.MetadataValue.json(dict(summary.by_type)),
        **{f"rows_{kind}": dg.MetadataValue.int(n) for kind, n in summary.by_type.items()},
    }
    if summary.newest is not None:
        metadata["newest_event"] = dg.MetadataValue.timestamp(summary.newest)
    grants = access_plan(service, summary.table)
    metadata["access_plan"] = dg.MetadataValue.json([g.as_dict() for g in grants])
    problem = ""
    try:
        applied = analytics.apply_access and store.apply_access(summary.table, grants)
    except AccessNotApplied as exc:
        applied, problem = False, str(exc)
        context.log.warning(f"access plan not applied: {problem}")
        metadata["access_error"] = dg.MetadataValue.text(problem)
    metadata["access_applied"] = dg.MetadataValue.bool(applied)
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="reporting_access", passed=not problem,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"applied": dg.MetadataValue.bool(applied),
                  "grants": dg.MetadataValue.int(len(grants))})


@dg.asset(partitions_def=services, deps=[EVENTS, event_retention], group_name=GROUP,
          kinds={"table"})
def daily_stats(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                registry: RegistryResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """`notify_events.daily_stats`: one row per (service, UTC day) counting sent, delivered,
    bounced_permanent, bounced_transient, complained, delayed, rejected and failed events.
    Incremental: only the days touched by events recorded since the previous refresh are
    recomputed, so a bounce recorded today for last week's message updates last week's row."""
    service = registered(registry, context.partition_key)
    refresh = analytics_store(warehouse).refresh_daily_stats(service.id)
    metadata: dict[str, Any] = {
        "days_recomputed": dg.MetadataValue.int(len(refresh.days)),
        "full_rebuild": dg.MetadataValue.bool(refresh.full),
        "days": dg.MetadataValue.json([d.isoformat() for d in refresh.days][:400]),
        "dagster/table_name": dg.MetadataValue.text("notify_events.daily_stats"),
    }
    if refresh.watermark is not None:
        metadata["recorded_through"] = dg.MetadataValue.timestamp(refresh.watermark)
    return dg.MaterializeResult(metadata=metadata)
