"""The Dagster layer of the analytics: check severities and metadata, the services sensor, and
the `events` materializations every delivery batch reports."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from notify_pipeline.assets import (
    bounce_rates,
    daily_stats,
    event_retention,
    events,
    service_configuration,
    services,
    sync_services,
)
from notify_pipeline.assets.events import events_metadata
from notify_pipeline.cli import process_once
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.profiles import resources_for
from notify_pipeline.sensors.services import services_sensor
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse
from tests.analytics_seed import seed


def _rates(local, instance, sends, bounces, complaints=0):
    warehouse = DuckDBWarehouse(local.settings.warehouse_path)
    warehouse.ensure_schema()
    today = datetime.now(UTC).date()
    seed(warehouse, "lookup-notices", today, "send", sends)
    seed(warehouse, "lookup-notices", today, "bounce", bounces, bounce_type="Permanent")
    seed(warehouse, "lookup-notices", today, "complaint", complaints)
    sync_services(instance, ["lookup-notices"])
    result = dg.materialize([events, daily_stats, bounce_rates], instance=instance,
                            partition_key="lookup-notices", resources=resources_for(local.settings))
    return {e.check_name: e for e in result.get_asset_check_evaluations()}, result


@pytest.mark.parametrize(("sends", "bounces", "complaints", "expected"), [
    (100, 4, 0, {"bounce_rate": (True, None), "complaint_rate": (True, None)}),
    (1000, 50, 1, {"bounce_rate": (False, dg.AssetCheckSeverity.WARN),
            "complaint_rate": (False, dg.AssetCheckSeverity.WARN)}),
    (100, 10, 5, {"bounce_rate": (False, dg.AssetCheckSeverity.ERROR),
             "complaint_rate": (False, dg.AssetCheckSeverity.ERROR)}),
])
def test_checks_pass_warn_and_error_with_the_level(local, sends, bounces, complaints,
                                                   expected):
    with dg.instance_for_test() as instance:
        checks, result = _rates(local, instance, sends, bounces, complaints)
    got = {name: (e.passed, None if e.passed else e.severity) for name, e in checks.items()}
    assert got == expected
    meta = result.asset_materializations_for_node("bounce_rates")[0].metadata
    assert isinstance(meta["bounce_rate"], dg.FloatMetadataValue)
    assert isinstance(checks["complaint_rate"].metadata["rate"], dg.FloatMetadataValue)


def test_checks_pass_under_the_volume_floor(local):
    with dg.instance_for_test() as instance:
        checks, _ = _rates(local, instance, 99, 50, 20)
    assert all(e.passed for e in checks.values())
    assert checks["bounce_rate"].metadata["level"].value == "insufficient_volume"


def test_services_sensor_keeps_partitions_equal_to_the_registry(local):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(services.name, ["gone-service", "lookup-notices"])
        context = dg.build_sensor_context(instance=instance,
                                          resources=resources_for(local.settings))
        result = services_sensor(context)
        assert isinstance(result, dg.SensorResult)
        added = [k for r in result.dynamic_partitions_requests
                 if isinstance(r, dg.AddDynamicPartitionsRequest) for k in r.partition_keys]
        removed = [k for r in result.dynamic_partitions_requests
                   if isinstance(r, dg.DeleteDynamicPartitionsRequest) for k in r.partition_keys]
        assert removed == ["gone-service"]
        assert sorted(added) == ["hr-reminders", "lookup-notices-test", "notify-alerts"]
        assert "removed ['gone-service']" in (result.skip_reason.skip_message or "")


def test_every_delivery_batch_reports_an_events_materialization(local, sink, monkeypatch,
                                                                tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    local.enqueue(local.request(id="ok-1"))
    local.enqueue(local.request(id="bad-1", to=["x@example.org"], identity_token="nope"))
    process_once(local.settings)
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("events"))
    assert event is not None
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (meta["delivered"], meta["rejected"], meta["rejected_unauthenticated"]) == (1, 1, 1)
    assert meta["failed"] == meta["duplicates"] == 0


def test_a_batch_over_its_limit_shows_deferred_and_the_limit_in_the_ui(local, sink, monkeypatch,
                                                                       tmp_path):
    """Run tags, the deliver step's metadata and the `events` materialization all show it."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    local.enqueue(local.request(id="first"))
    local.enqueue(local.request(id="second"))
    process_once(local.settings.model_copy(update={"limit_per_minute": 1}))
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("events"))
        [run] = instance.get_runs(dg.RunsFilter(job_name="deliver_batch"))
        outputs = [e for e in instance.all_logs(run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "STEP_OUTPUT"]
    assert event is not None
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (meta["delivered"], meta["deferred"]) == (1, 1)
    assert "| `service:lookup-notices` | per_minute |" in str(meta["sending_limits"])
    assert "| 1 | 1 |" in str(meta["sending_limits"]), "used 1 of a cap of 1"
    assert run.tags["notify/deferred"] == "1"
    [deliver] = [e for e in outputs if e.step_key == "deliver"]
    step_meta = deliver.dagster_event.step_output_data.metadata
    assert step_meta["deferred_by_reason"].value == {"per_minute": 1}
    assert "service:lookup-notices" in str(step_meta["sending_limits"].value)


def test_events_metadata_fills_absent_counts_with_zero():
    meta = events_metadata({"events": 4})
    assert meta["events"].value == 4 and meta["delivered"].value == 0
    assert meta["rejected"].value == 0


def test_event_retention_expires_the_inbox_copies_with_the_events(local):
    """lookup-notices keeps 400 days (the registry's default, also the default for copies of
    no registered service): old copies go, young ones and another service's stay."""
    box = LocalInbox(local.settings.home)
    aged = {}
    for name, service, days in [("old.json", "lookup-notices", 401),
                                ("young.json", "lookup-notices", 399),
                                ("other.json", "hr-reminders", 9000),
                                ("nobody.json", "no-such-service", 401)]:
        body = json.dumps({"service": service, "identity_token": "t"}).encode()
        box.quarantine("20250101T000000-0123456789ab", name, body, "malformed: test")
        path = box.rejected_dir / f"20250101T000000-0123456789ab--{name}"
        stamp = (datetime.now(UTC) - timedelta(days=days)).timestamp()
        os.utime(path, (stamp, stamp))
        aged[name] = path
    with dg.instance_for_test() as instance:
        sync_services(instance, ["lookup-notices"])
        result = dg.materialize([events, event_retention], instance=instance,
                                partition_key="lookup-notices",
                                resources=resources_for(local.settings))
        again = dg.materialize([events, event_retention], instance=instance,
                               partition_key="lookup-notices",
                               resources=resources_for(local.settings))
    meta = result.asset_materializations_for_node("event_retention")[0].metadata
    counts = {k: v.value for k, v in meta.items() if k.startswith("inbox_")}
    assert counts == {"inbox_removed": 1, "inbox_removed_done": 0, "inbox_removed_rejected": 2,
                      "inbox_removed_unattributed": 1, "inbox_examined": 3, "inbox_failed": 0}
    assert sorted(p.name.split("--")[1] for p in box.rejected_dir.glob("*--*.json")) == [
        "other.json", "young.json"]
    second = again.asset_materializations_for_node("event_retention")[0].metadata
    assert second["inbox_removed_rejected"].value == 0


def test_service_configuration_is_a_table_planned_for_the_technical_principals(local):
    with dg.instance_for_test() as instance:
        sync_services(instance, ["hr-reminders"])
        result = dg.materialize([service_configuration], instance=instance,
                                partition_key="hr-reminders",
                                resources=resources_for(local.settings))
    meta = result.asset_materializations_for_node("service_configuration")[0].metadata
    assert meta["dagster/table_name"].value == "notify_events.config_hr_reminders"
    assert meta["access_plan"].value == [
        {"principal": "group:hr-systems@example.cam.ac.uk", "role": "roles/bigquery.dataViewer",
         "resource": "notify_events.config_hr_reminders"}], "technical principals, nobody else"
    assert meta["access_applied"].value is False, "locally the plan is only shown"
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "configuration_access" and check.passed
    [(entry,)] = DuckDBWarehouse(local.settings.warehouse_path).query(
        "SELECT configuration FROM notify_events.config_hr_reminders")
    assert json.loads(entry)["technical_contacts"] == ["hr-systems@example.cam.ac.uk",
                                                       "hr-oncall@example.org"]
