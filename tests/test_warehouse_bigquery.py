"""The BigQuery warehouse against a real bqemulator: table layout, exact idempotent writes, views.

Every test writes to a dataset of its own. Timeouts and retries are short: bqemulator answers a
bad request with HTTP 500, which the client would otherwise retry for minutes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from google.api_core.exceptions import BadRequest, NotFound
from google.api_core.retry import Retry
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import bigquery

from notify_pipeline.bigquery_resource import EmulatorAwareBigQueryResource
from notify_pipeline.events import BounceType, Event, EventType, utcnow
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse

SHORT = {"timeout_seconds": 10.0, "retry_seconds": 10.0}
QUICK = Retry(timeout=10)

# The event table contract (docs/events.md): columns and types.
CONTRACT = [
    ("event_id", "STRING"), ("service", "STRING"), ("message_id", "STRING"),
    ("provider_message_id", "STRING"), ("event_type", "STRING"), ("recipient", "STRING"),
    ("occurred_at", "TIMESTAMP"), ("recorded_at", "TIMESTAMP"), ("bounce_type", "STRING"),
    ("bounce_subtype", "STRING"), ("reason", "STRING"), ("subject", "STRING"), ("tags", "JSON"),
]


@pytest.fixture
def client(bigquery_emulator):
    resource = EmulatorAwareBigQueryResource(project=bigquery_emulator.project,
                                             endpoint=bigquery_emulator.endpoint)
    with resource.get_client() as bq:
        yield bq


@pytest.fixture
def warehouse(client):
    return BigQueryWarehouse(client, dataset=f"t_{uuid.uuid4().hex[:12]}", **SHORT)


def _event(event_id: str, service: str = "lookup-notices", **fields) -> Event:
    fields.setdefault("occurred_at", datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC))
    return Event(event_id=event_id, service=service, message_id="m1",
                 event_type=fields.pop("event_type", EventType.DELIVERY),
                 recipient="a@example.org", **fields)


def _rows(client, table_id: str) -> list[dict]:
    job = client.query(f"SELECT * FROM `{table_id}` ORDER BY event_id", retry=QUICK, timeout=10)
    return [dict(row.items()) for row in job.result(timeout=10)]


def _ids(client, table_id: str) -> list[str]:
    return [row["event_id"] for row in _rows(client, table_id)]


def test_table_has_the_contract_columns_day_partitions_and_clustering(client, warehouse):
    warehouse.ensure_table()
    BigQueryWarehouse(client, dataset=warehouse.dataset, **SHORT).ensure_table()  # idempotent
    table = client.get_table(warehouse.table_id)
    assert [(f.name, f.field_type) for f in table.schema] == CONTRACT
    assert table.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert table.time_partitioning.field == "occurred_at"
    assert table.clustering_fields == ["service", "event_type"]


def test_write_round_trips_every_column(client, warehouse):
    recorded = datetime(2026, 11, 28, 9, 31, tzinfo=UTC)
    full = _event("e-full", provider_message_id="0100-abc", recorded_at=recorded,
                  event_type=EventType.BOUNCE, bounce_type=BounceType.PERMANENT,
                  bounce_subtype="General", reason="550 5.1.1 user unknown",
                  subject="Grüße ✉", tags={"campaign": "welcome", "ü": "ß"})
    sparse = Event(event_id="e-sparse", service=None, message_id=None,
                   event_type=EventType.REJECT, recipient=None,
                   occurred_at=datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC))
    assert warehouse.write_events([full, sparse]) == 2
    got_full, got_sparse = _rows(client, warehouse.table_id)
    assert got_full == {
        "event_id": "e-full", "service": "lookup-notices", "message_id": "m1",
        "provider_message_id": "0100-abc", "event_type": "bounce", "recipient": "a@example.org",
        "occurred_at": full.occurred_at, "recorded_at": recorded, "bounce_type": "Permanent",
        "bounce_subtype": "General", "reason": "550 5.1.1 user unknown",
        "subject": "Grüße ✉", "tags": {"campaign": "welcome", "ü": "ß"},
    }
    assert got_sparse["event_type"] == "reject" and got_sparse["tags"] == {}
    assert got_sparse["service"] is None and got_sparse["bounce_type"] is None
    assert got_sparse["recorded_at"] > got_sparse["occurred_at"]  # stamped at write time


def test_a_retried_write_adds_nothing(client, warehouse):
    events = [_event(f"e{i}") for i in range(5)]
    assert warehouse.write_events(events) == 5
    assert warehouse.write_events(events) == 0
    assert _ids(client, warehouse.table_id) == [f"e{i}" for i in range(5)]


def test_a_mixed_batch_adds_only_the_new_events_once(client, warehouse):
    warehouse.write_events([_event("a"), _event("b")])
    late_b = _event("b", occurred_at=utcnow())  # same id: the stored row stands
    assert warehouse.write_events([late_b, _event("c"), _event("c"), _event("d")]) == 2
    rows = _rows(client, warehouse.table_id)
    assert [r["event_id"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1]["occurred_at"] == _event("b").occurred_at


def test_an_empty_write_touches_nothing(client, warehouse):
    assert warehouse.write_events([]) == 0
    with pytest.raises(NotFound):
        client.get_dataset(f"{client.project}.{warehouse.dataset}", retry=QUICK, timeout=10)


def test_staging_tables_are_dropped_after_success_and_failure(client, warehouse):
    warehouse.write_events([_event("a")])
    unserialisable = _event("b", tags={"x": object()})  # fails after the staging table exists
    with pytest.raises(TypeError):
        warehouse.write_events([unserialisable])
    tables = client.list_tables(f"{client.project}.{warehouse.dataset}", retry=QUICK, timeout=10)
    assert [t.table_id for t in tables] == ["events"]


@pytest.mark.parametrize("field", ["dataset", "table"])
@pytest.mark.parametrize("name", ["", "bad-name", "a.b", "x`y", "events; DROP TABLE t", "9x"])
def test_invalid_names_are_refused_before_any_call(field, name):
    unreachable = EmulatorAwareBigQueryResource(project="notify-test",
                                                endpoint="http://127.0.0.1:1")
    with unreachable.get_client() as client, pytest.raises(ValueError, match=field):
        BigQueryWarehouse(client, **{field: name})


def _view_id(client, warehouse, service_table: str) -> str:
    return f"{client.project}.{warehouse.dataset}.{service_table}"


def test_service_views_show_only_their_service(client, warehouse):
    warehouse.write_events([_event("a1"), _event("b1", service="other-svc"), _event("a2")])
    stale = bigquery.Table(_view_id(client, warehouse, "events_lookup_notices"))
    stale.view_query = f"SELECT * FROM `{warehouse.table_id}` WHERE service = 'other-svc'"
    client.create_table(stale, retry=QUICK, timeout=10)
    warehouse.create_service_views(["lookup-notices", "other-svc"])
    view = client.get_table(_view_id(client, warehouse, "events_lookup_notices"))
    assert view.table_type == "VIEW"
    assert _ids(client, view.reference) == ["a1", "a2"]  # the stale definition was replaced
    assert _ids(client, _view_id(client, warehouse, "events_other_svc")) == ["b1"]
    with pytest.raises(ValueError, match="service id"):
        warehouse.create_service_views(["Bad'id"])


def test_resource_serves_a_dagster_asset(bigquery_emulator):
    @dg.asset
    def events_written(bigquery: EmulatorAwareBigQueryResource) -> int:
        with bigquery.get_client() as bq:
            return BigQueryWarehouse(bq, dataset="from_dagster", **SHORT).write_events(
                [_event("d1")])

    resource = EmulatorAwareBigQueryResource(project=bigquery_emulator.project,
                                             endpoint=bigquery_emulator.endpoint)
    result = dg.materialize([events_written], resources={"bigquery": resource})
    assert result.output_for_node("events_written") == 1


def test_resource_without_endpoint_is_the_stock_credentialed_client(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    resource = EmulatorAwareBigQueryResource(project="notify-test")
    with pytest.raises(DefaultCredentialsError), resource.get_client():
        pass


# bqemulator gaps: each fails loudly (strict xfail) once the emulator closes it.

@pytest.mark.xfail(strict=True, raises=BadRequest, reason=(
    "bqemulator 1.4.0 refuses multipart load uploads (second part Content-Type '*/*'), which the"
    " client uses for small loads of known size; BigQueryWarehouse loads with size=None, i.e. a"
    " resumable upload, covered by every write test above"))
def test_gap_small_multipart_load(client, warehouse):
    warehouse.ensure_table()
    job = client.load_table_from_json([{"event_id": "x"}], warehouse.table_id, timeout=10)
    job.result(retry=QUICK, timeout=10)


@pytest.mark.xfail(strict=True, reason=(
    "bqemulator 1.4.0 ignores a table's expirationTime; staging tables rely on it only when a"
    " crash skips their drop, and the drop itself is covered by test_staging_tables_are_dropped"))
def test_gap_table_expiration_is_kept(client, warehouse):
    warehouse.ensure_table()
    table = bigquery.Table(f"{warehouse.table_id}_expiring", schema=[
        bigquery.SchemaField("x", "STRING")])
    table.expires = utcnow() + timedelta(days=1)
    client.create_table(table, retry=QUICK, timeout=10)
    assert client.get_table(table.reference).expires is not None


@pytest.mark.xfail(strict=True, reason=(
    "bqemulator 1.4.0 returns no view.query in table metadata (the view itself works); the"
    " view definitions are checked by querying them in test_service_views_show_only_their_service"))
def test_gap_view_query_is_read_back(client, warehouse):
    warehouse.create_service_views(["lookup-notices"])
    view = client.get_table(_view_id(client, warehouse, "events_lookup_notices"))
    assert "WHERE service = 'lookup-notices'" in (view.view_query or "")
