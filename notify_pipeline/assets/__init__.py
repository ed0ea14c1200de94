"""The analyst half as software-defined assets (DESIGN.md, Analytics): `events` →
`service_events`, `daily_stats` → `bounce_rates` (+ checks) → `bounce_rate_alerts`;
`sheets_export`; `dns_records`; `event_retention`; `service_configuration`. The SQL lives in
`notify_pipeline.analytics`."""


from notify_pipeline.assets.alerts import bounce_rate_alerts
from notify_pipeline.assets.automation import JOBS, SCHEDULES
from notify_pipeline.assets.configuration import service_configuration
from notify_pipeline.assets.events import events, report_events_materialization
from notify_pipeline.assets.exports import dns_records, sheets_export
from notify_pipeline.assets.partitions import services, sync_services
from notify_pipeline.assets.rates import bounce_rates
from notify_pipeline.assets.tables import daily_stats, event_retention, service_events

PER_SERVICE = [service_events, daily_stats, bounce_rates, bounce_rate_alerts, sheets_export,
               event_retention, service_configuration]
ASSETS = [events, *PER_SERVICE, dns_records]

__all__ = [
    "ASSETS", "JOBS", "PER_SERVICE", "SCHEDULES", "bounce_rate_alerts", "bounce_rates",
    "daily_stats", "dns_records", "event_retention", "events", "report_events_materialization",
    "service_configuration", "service_events", "services", "sheets_export", "sync_services",
]
