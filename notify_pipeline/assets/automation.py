"""When the analytics run by themselves: tables hourly, rates, alerts and retention daily, the
DNS records daily. Schedules, so the UI lists each with its last tick; one run per service."""


import dagster as dg

from notify_pipeline.assets.partitions import services
from notify_pipeline.schedules import once_a_day

tables_job = dg.define_asset_job(
    "analytics_tables", selection=["service_events", "daily_stats", "sheets_export",
                                   "service_configuration"],
    tags={"notify/kind": "analytics"},
    description="Refresh one service's event table, daily stats, export and configuration.")
rates_job = dg.define_asset_job(
    "analytics_rates", selection=["daily_stats", "bounce_rates", "bounce_rate_alerts",
                                  "event_retention"],
    tags={"notify/kind": "analytics"},
    description="Compute one service's rates (with their checks), send its alerts, and delete"
    " its expired events.")
dns_job = dg.define_asset_job(
    "dns_records_refresh", selection=["dns_records"], tags={"notify/kind": "analytics"},
    description="Write the DNS records every sending domain needs.")


def _per_service(context: dg.ScheduleEvaluationContext, stamp: str) -> list[dg.RunRequest]:
    assert services.name is not None
    keys = context.instance.get_dynamic_partitions(services.name)
    return [dg.RunRequest(run_key=f"{key}:{stamp}", partition_key=key) for key in keys]


@dg.schedule(job=tables_job, cron_schedule="5 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every hour: each service's tables and export.")
def analytics_tables_hourly(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    when = context.scheduled_execution_time
    return _per_service(context, f"{when:%Y-%m-%dT%H}" if when else "now")


@dg.schedule(job=rates_job, cron_schedule="30 6 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every day at 06:30 UTC: each service's rates, alerts and retention.")
def analytics_rates_daily(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    when = context.scheduled_execution_time
    return _per_service(context, f"{when:%Y-%m-%d}" if when else "now")


dns_records_daily = once_a_day("dns_records_daily", dns_job, "0 6 * * *",
                               "Every day at 06:00 UTC: the DNS records file.")


SCHEDULES = [analytics_tables_hourly, analytics_rates_daily, dns_records_daily]
JOBS = [tables_job, rates_job, dns_job]
