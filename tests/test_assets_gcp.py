"""The analytics assets on the gcp profile's warehouse, against a real bqemulator: the same tables
and numbers, and the access plan in the metadata."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg

from notify_pipeline.analytics.bigquery_store import BigQueryAnalytics
from notify_pipeline.assets import (
    bounce_rates,
    daily_stats,
    event_retention,
    events,
    service_configuration,
    service_events,
    sheets_export,
    sync_services,
)
from notify_pipeline.assets.resource import AnalyticsResource
from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.events import BounceType, Event, EventType
from notify_pipeline.inbox.gcs_store import SERVICE
from notify_pipeline.resources import (
    BigQueryWarehouseResource,
    DeploymentResource,
    GcsInboxResource,
    RegistryResource,
)
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse
from tests.helpers import REGISTRY


def _events(service, when, kind, n, bounce=None):
    return [Event(event_id=f"{service}-{kind}-{when:%j}-{i}", service=service, message_id=f"m{i}",
                  event_type=EventType(kind), recipient=f"r{i}@example.org", occurred_at=when,
                  bounce_type=BounceType(bounce) if bounce else None) for i in range(n)]


def test_tables_rates_exports_and_access_plan_on_bigquery(bigquery_emulator, gcs_emulator,
                                                         tmp_path):
    bq = EmulatorAwareBigQueryResource(project=bigquery_emulator.project,
                                       endpoint=bigquery_emulator.endpoint)
    dataset = f"g_{uuid.uuid4().hex[:12]}"
    client = bq.make_client()
    warehouse = BigQueryWarehouse(client, dataset=dataset, timeout_seconds=20, retry_seconds=20)
    now = datetime.now(UTC)
    bucket = gcs_emulator.new_bucket()
    young = bucket.blob("rejected/20261101T000000-0123456789ab/r.json")
    young.metadata = {SERVICE: "hr-reminders"}
    young.upload_from_string(b'{"service": "hr-reminders"}', timeout=30)
    warehouse.write_events(
        _events("hr-reminders", now - timedelta(days=1), "send", 120)
        + _events("hr-reminders", now - timedelta(days=1), "bounce", 13, "Permanent")
        + _events("hr-reminders", now - timedelta(days=500), "send", 4)
        + _events("lookup-notices", now, "send", 9))
    resources = {
        "warehouse": BigQueryWarehouseResource(bigquery=bq, dataset=dataset),
        "registry": RegistryResource(path=str(REGISTRY)),
        "deployment": DeploymentResource(),
        "analytics": AnalyticsResource(home=str(tmp_path), apply_access=True),
        "inbox": GcsInboxResource(project=gcs_emulator.project, bucket=bucket.name,
                                  storage_emulator_host=gcs_emulator.endpoint),
    }
    with dg.instance_for_test() as instance:
        sync_services(instance, ["hr-reminders"])
        result = dg.materialize(
            [events, service_events, daily_stats, bounce_rates, sheets_export, event_retention,
             service_configuration],
            instance=instance, partition_key="hr-reminders", resources=resources)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    table = f"{bigquery_emulator.project}.{dataset}.events_hr_reminders"
    assert meta["service_events"]["dagster/row_count"].value == 133  # 4 expired first
    assert meta["service_events"]["access_plan"].value == [
        {"principal": p, "role": "roles/bigquery.dataViewer", "resource": table}
        for p in ("group:hr-analysts@example.cam.ac.uk", "user:jane.doe@example.cam.ac.uk")]
    # bqemulator has no table IAM: the view is authorized, the grants are reported as not
    # applied, and the check warns instead of the table failing.
    assert meta["service_events"]["access_applied"].value is False
    assert meta["service_events"]["access_error"].value.startswith("unsupported:")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["reporting_access"].passed
    config = meta["service_configuration"]
    assert config["access_plan"].value == [
        {"principal": "group:hr-systems@example.cam.ac.uk", "role": "roles/bigquery.dataViewer",
         "resource": f"{bigquery_emulator.project}.{dataset}.config_hr_reminders"}]
    assert (config["access_applied"].value, config["changed"].value) == (False, True)
    assert config["access_error"].value.startswith("unsupported:")
    assert not checks["configuration_access"].passed
    assert checks["configuration_access"].severity is dg.AssetCheckSeverity.WARN
    assert checks["reporting_access"].severity is dg.AssetCheckSeverity.WARN
    assert (checks["bounce_rate"].passed, checks["bounce_rate"].severity) == (
        False, dg.AssetCheckSeverity.ERROR)
    rates = meta["bounce_rates"]
    assert (rates["sent"].value, rates["bounced"].value, rates["bounce_level"].value) == (
        120, 13, "critical")
    assert meta["sheets_export"]["dagster/row_count"].value == 133
    assert meta["sheets_export"]["sheets"].value.startswith("not configured")
    assert meta["event_retention"]["deleted"].value == 4
    assert (meta["event_retention"]["inbox_removed"].value,
            meta["event_retention"]["inbox_examined"].value) == (0, 0), "kept just now"
    assert [b.name for b in bucket.list_blobs(timeout=10)] == [young.name]
    store = BigQueryAnalytics(warehouse, client, timeout_seconds=20, retry_seconds=20)
    assert store.query(f"SELECT service, sum(sent), sum(bounced_permanent) FROM"
                       f" {store.dialect.table('daily_stats')} GROUP BY service") == [
        ("hr-reminders", 120, 13)]
