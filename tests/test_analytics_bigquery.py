"""The gcp analytics store against a real bqemulator: the same tables and numbers as DuckDB's.

Each test uses a dataset of its own; timeouts are short (bqemulator answers bad requests with
HTTP 500, which the client would otherwise retry for minutes).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from google.api_core.exceptions import MethodNotAllowed

from notify_pipeline.analytics.access import READER_ROLE, Grant
from notify_pipeline.analytics.bigquery_store import BigQueryAnalytics
from notify_pipeline.analytics.rates import Level
from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.events import BounceType, Event, EventType
from notify_pipeline.registry import AlertThresholds
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse
from tests.analytics_seed import at

SHORT = {"timeout_seconds": 20.0, "retry_seconds": 20.0}
D1, D2, D3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)


@pytest.fixture
def client(bigquery_emulator):
    resource = EmulatorAwareBigQueryResource(project=bigquery_emulator.project,
                                             endpoint=bigquery_emulator.endpoint)
    with resource.get_client() as bq:
        yield bq


@pytest.fixture
def warehouse(client):
    return BigQueryWarehouse(client, dataset=f"a_{uuid.uuid4().hex[:12]}", **SHORT)


@pytest.fixture
def store(warehouse, client):
    analytics = BigQueryAnalytics(warehouse, client, **SHORT)
    analytics.ensure_tables()
    return analytics


def events(service, day, kind, n, *, bounce=None, recorded=None, reason=None, tag=""):
    recorded = recorded or at(day) + timedelta(hours=1)
    return [Event(event_id=f"{service}-{day}-{kind}-{bounce}-{tag}-{i}", service=service,
                  message_id=f"m{i}", event_type=EventType(kind), recipient=f"r{i}@example.org",
                  occurred_at=at(day), recorded_at=recorded,
                  bounce_type=BounceType(bounce) if bounce else None, reason=reason)
            for i in range(n)]


def test_service_events_daily_stats_and_rates(warehouse, store):
    base = at(D3, 20)
    warehouse.write_events(
        events("svc-a", D2, "send", 100, recorded=base)
        + events("svc-a", D3, "bounce", 5, bounce="Permanent", recorded=base, reason="550 gone")
        + events("svc-a", D3, "bounce", 2, bounce="Transient", recorded=base)
        + events("svc-a", D3, "complaint", 1, recorded=base)
        + events("other", D2, "send", 7, recorded=base))
    summary = store.refresh_service_events("svc-a")
    assert summary.rows == 108 and summary.table.endswith(".events_svc_a")
    assert dict(summary.by_type) == {"send": 100, "bounce": 7, "complaint": 1}
    assert store.refresh_daily_stats("svc-a").days == (D2, D3)
    row = store.compute_rates("svc-a", D3, AlertThresholds())
    assert (row.sent, row.bounced, row.complained) == (100, 5, 1)
    assert (row.bounce_rate, row.complaint_rate) == (0.05, 0.01)
    assert (row.bounce_level, row.complaint_level) == (Level.WARNING, Level.CRITICAL)
    assert store.top_reasons("svc-a", D3, 7).bounce == [("550 gone", 5)]
    daily = store.query(f"SELECT day, sent, bounced_permanent, bounced_transient, complained"
                        f" FROM {store.dialect.table('daily_stats')} ORDER BY day")
    assert daily == [(D2, 100, 0, 0, 0), (D3, 0, 5, 2, 1)]


def test_late_events_recompute_their_old_day_only(warehouse, client):
    store = BigQueryAnalytics(warehouse, client, **SHORT)
    store.ensure_tables()
    base = at(D3, 20)
    warehouse.write_events(events("svc", D1, "send", 10, recorded=base)
                           + events("svc", D3, "send", 3, recorded=base))
    store.refresh_daily_stats("svc")
    late = base + timedelta(hours=2)
    warehouse.write_events(events("svc", D1, "bounce", 2, bounce="Permanent", recorded=late))
    refresh = store.refresh_daily_stats("svc")
    assert refresh.days == (D1, D3)  # D3 again: its events lie within the watermark overlap
    assert store.query(f"SELECT day, sent, bounced_permanent FROM"
                       f" {store.dialect.table('daily_stats')} ORDER BY day") == [
        (D1, 10, 2), (D3, 3, 0)]


def test_retention_and_export(warehouse, store):
    warehouse.write_events(events("svc", D1, "send", 3) + events("svc", D3, "send", 2)
                           + events("other", D1, "send", 1))
    assert [len(c) for c in store.export_rows("svc", at(D1, 0), chunk=2)] == [2, 2, 1]
    assert store.delete_expired("svc", at(D2, 0)) == 3
    assert store.delete_expired("svc", at(D2, 0)) == 0
    assert sum(len(c) for c in store.export_rows("svc", at(D1, 0))) == 2


def test_the_view_is_authorized_on_the_events_dataset_once(warehouse, store, client):
    warehouse.write_events(events("svc", D1, "send", 1))
    table = store.refresh_service_events("svc").table
    assert store.authorize_view(table) is True
    assert store.authorize_view(table) is False
    entries = client.get_dataset(table.rsplit(".", 1)[0]).access_entries
    assert [e.entity_id["tableId"] for e in entries if e.entity_type == "view"] == ["events_svc"]


@pytest.mark.xfail(strict=True, raises=MethodNotAllowed,
                   reason="bqemulator has no tables.getIamPolicy / setIamPolicy (HTTP 405)")
def test_reporting_principals_are_granted_read_on_their_view_only(warehouse, store, client):
    warehouse.write_events(events("svc", D1, "send", 1))
    table = store.refresh_service_events("svc").table
    grants = [Grant("group:svc-analysts@example.org", READER_ROLE, table)]
    assert store.grant_readers(table, grants) is True
    assert store.grant_readers(table, grants) is False
    policy = client.get_iam_policy(table)
    assert [(b["role"], sorted(b["members"])) for b in policy.bindings] == [
        (READER_ROLE, ["group:svc-analysts@example.org"])]
