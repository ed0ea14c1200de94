"""`bounce_rates` and its two asset checks, `bounce_rate` and `complaint_rate`."""


from collections.abc import Iterator
from typing import Any

import dagster as dg

from notify_pipeline.analytics.rates import Level, Metric, RateRow
from notify_pipeline.assets.partitions import services
from notify_pipeline.assets.resource import analytics_store
from notify_pipeline.assets.tables import GROUP, daily_stats, registered
from notify_pipeline.events import utcnow
from notify_pipeline.resources import RegistryResource, WarehouseResource

CHECKS = {Metric.BOUNCE: "bounce_rate", Metric.COMPLAINT: "complaint_rate"}
_PASSING = (Level.OK, Level.INSUFFICIENT_VOLUME)


def check_result(row: RateRow, metric: Metric) -> dg.AssetCheckResult:
    """Pass at ok and insufficient_volume; WARN at warning, ERROR at critical."""
    level = row.level(metric)
    severity = dg.AssetCheckSeverity.ERROR if level is Level.CRITICAL else (
        dg.AssetCheckSeverity.WARN)
    return dg.AssetCheckResult(
        check_name=CHECKS[metric],
        passed=level in _PASSING,
        severity=severity,
        metadata={
            "level": dg.MetadataValue.text(level.value),
            "rate": dg.MetadataValue.float(row.rate(metric)),
            "count": dg.MetadataValue.int(row.count(metric)),
            "sent": dg.MetadataValue.int(row.sent),
            "as_of": dg.MetadataValue.text(row.as_of.isoformat()),
        },
    )


def rate_metadata(row: RateRow) -> dict[str, Any]:
    return {
        "bounce_rate": dg.MetadataValue.float(row.bounce_rate),
        "complaint_rate": dg.MetadataValue.float(row.complaint_rate),
        "sent": dg.MetadataValue.int(row.sent),
        "bounced": dg.MetadataValue.int(row.bounced),
        "complained": dg.MetadataValue.int(row.complained),
        "bounce_level": dg.MetadataValue.text(row.bounce_level.value),
        "complaint_level": dg.MetadataValue.text(row.complaint_level.value),
        "as_of": dg.MetadataValue.text(row.as_of.isoformat()),
        "window_days": dg.MetadataValue.int(row.window_days),
        "dagster/table_name": dg.MetadataValue.text("notify_events.bounce_rates"),
    }


@dg.asset(
    partitions_def=services, deps=[daily_stats], group_name=GROUP, kinds={"table"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="bounce_rates",
                          description=f"The service's {metric.value} rate over its window is"
                          " below the warning threshold (or too few sends to judge).")
        for metric, name in CHECKS.items()
    ],
)
def bounce_rates(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                 registry: RegistryResource) -> Iterator[Any]:
    """`notify_events.bounce_rates`: per service and `as_of` day (history kept), the rolling
    window of the registry's `alerts.window_days`: sent (recipients with a send event), bounced
    (permanent bounces), complained, their rates over sent, and a level per rate: ok, warning,
    critical, or insufficient_volume below `alerts.min_volume` sends."""
    service = registered(registry, context.partition_key)
    row = analytics_store(warehouse).compute_rates(service.id, utcnow().date(), service.alerts)
    yield dg.MaterializeResult(metadata=rate_metadata(row))
    for metric in Metric:
        yield check_result(row, metric)
