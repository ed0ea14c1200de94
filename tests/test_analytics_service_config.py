"""The service configuration tables: DuckDB on a real file, BigQuery against bqemulator, and the
plan that lets only a service's technical principals read its own."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from google.api_core.iam import Policy

from notify_pipeline.analytics.access import (
    READER_ROLE,
    AccessFailure,
    AccessNotApplied,
    Grant,
    add_bindings,
    configuration_access_plan,
)
from notify_pipeline.analytics.service_config import (
    BigQueryConfigTables,
    ConfigRow,
    DuckDBConfigTables,
    config_table,
)
from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.policy import Domains
from notify_pipeline.registry import load_registry
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse
from tests.helpers import REGISTRY

DOMAINS = Domains(main="notify.example.org", testing="testing.example.org")
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
def registry():
    return load_registry(REGISTRY)


def test_the_row_is_the_whole_registry_entry_with_defaults_and_the_from_address(registry):
    service = registry["hr-reminders"]
    row = ConfigRow.of(service, DOMAINS)
    entry = json.loads(row.configuration)
    assert entry == service.model_dump(mode="json")
    assert entry["retention_days"] == 400 and entry["alerts"]["bounce_critical"] == 0.10
    assert entry["technical_principals"] == ["group:hr-systems@example.cam.ac.uk"]
    assert row.from_address == "hr-reminders@notify.example.org"
    assert config_table("hr-reminders") == "config_hr_reminders"


def test_only_the_services_technical_principals_are_planned(registry):
    plan = configuration_access_plan(registry["hr-reminders"], "p.d.config_hr_reminders")
    assert plan == [Grant("group:hr-systems@example.cam.ac.uk", READER_ROLE,
                          "p.d.config_hr_reminders")]
    assert configuration_access_plan(registry["lookup-notices"], "t") == [], "none registered"


def test_add_bindings_adds_only_what_is_missing():
    policy = Policy()
    policy.bindings = [{"role": READER_ROLE, "members": {"user:a@example.org"}}]
    grants = [Grant("user:a@example.org", READER_ROLE, "t"), Grant("group:b@example.org",
                                                                    READER_ROLE, "t")]
    assert add_bindings(policy.bindings, grants) is True
    assert add_bindings(policy.bindings, grants) is False, "already in force: nothing to write"
    assert [(b["role"], sorted(b["members"])) for b in policy.bindings] == [
        (READER_ROLE, ["group:b@example.org", "user:a@example.org"])]


def test_duckdb_table_is_rewritten_only_when_the_entry_changes(tmp_path, registry):
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    tables = DuckDBConfigTables(warehouse)
    service = registry["hr-reminders"]

    first = tables.write(ConfigRow.of(service, DOMAINS), NOW)
    again = tables.write(ConfigRow.of(service, DOMAINS), NOW)
    moved = tables.write(ConfigRow.of(service.model_copy(update={"retention_days": 30}),
                                      DOMAINS), NOW)

    assert (first.table, first.changed, again.changed, moved.changed) == (
        "notify_events.config_hr_reminders", True, False, True)
    [(sid, sender, entry)] = warehouse.query(
        "SELECT service, from_address, configuration FROM notify_events.config_hr_reminders")
    assert (sid, sender) == ("hr-reminders", "hr-reminders@notify.example.org")
    assert json.loads(entry)["retention_days"] == 30


@pytest.fixture
def bigquery_tables(bigquery_emulator):
    resource = EmulatorAwareBigQueryResource(project=bigquery_emulator.project,
                                             endpoint=bigquery_emulator.endpoint)
    with resource.get_client() as client:
        dataset = f"c_{uuid.uuid4().hex[:12]}"
        client.create_dataset(dataset, timeout=20)
        yield client, BigQueryConfigTables(client, dataset, timeout_seconds=20,
                                           retry_seconds=20)


def test_bigquery_table_keeps_one_row_rewritten_only_on_change(bigquery_tables, registry):
    client, tables = bigquery_tables
    service = registry["hr-reminders"]

    first = tables.write(ConfigRow.of(service, DOMAINS), NOW)
    again = tables.write(ConfigRow.of(service, DOMAINS), NOW)
    moved = tables.write(ConfigRow.of(service.model_copy(update={"retention_days": 30}),
                                      DOMAINS), NOW)

    assert (first.changed, again.changed, moved.changed) == (True, False, True)
    assert first.table.endswith(".config_hr_reminders")
    rows = [tuple(r) for r in client.list_rows(first.table, timeout=20)]
    assert len(rows) == 1 and rows[0][:2] == ("hr-reminders", "hr-reminders@notify.example.org")
    assert json.loads(rows[0][2])["retention_days"] == 30


def test_bigquery_grant_without_table_iam_is_a_typed_failure(bigquery_tables, registry):
    """bqemulator has no tables.getIamPolicy (HTTP 405): reported as `unsupported`, typed."""
    _client, tables = bigquery_tables
    written = tables.write(ConfigRow.of(registry["hr-reminders"], DOMAINS), NOW)
    plan = configuration_access_plan(registry["hr-reminders"], written.table)
    with pytest.raises(AccessNotApplied) as raised:
        tables.grant(written.table, plan)
    assert raised.value.reason is AccessFailure.UNSUPPORTED


@pytest.mark.xfail(strict=True, raises=AccessNotApplied,
                   reason="bqemulator has no tables.getIamPolicy / setIamPolicy (HTTP 405)")
def test_bigquery_grant_is_idempotent_and_only_the_plan(bigquery_tables, registry):
    client, tables = bigquery_tables
    written = tables.write(ConfigRow.of(registry["hr-reminders"], DOMAINS), NOW)
    plan = configuration_access_plan(registry["hr-reminders"], written.table)
    assert tables.grant(written.table, plan) is True
    assert tables.grant(written.table, plan) is False
    policy = client.get_iam_policy(written.table)
    assert [(b["role"], sorted(b["members"])) for b in policy.bindings] == [
        (READER_ROLE, ["group:hr-systems@example.cam.ac.uk"])]
