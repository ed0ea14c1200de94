"""The local warehouse: exact deduplication by `event_id` without a primary key, and files made
with the old primary-key schema moved to the keyless one, once."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime

import duckdb
import pytest

from notify_pipeline.events import Event, EventType
from notify_pipeline.warehouse.duckdb import ROW_GROUP_SIZE, SCHEMA, DuckDBWarehouse

AT = datetime(2026, 12, 1, 12, tzinfo=UTC)
CONTRACT = [
    ("event_id", "VARCHAR"), ("service", "VARCHAR"), ("message_id", "VARCHAR"),
    ("provider_message_id", "VARCHAR"), ("event_type", "VARCHAR"), ("recipient", "VARCHAR"),
    ("occurred_at", "TIMESTAMP WITH TIME ZONE"), ("recorded_at", "TIMESTAMP WITH TIME ZONE"),
    ("bounce_type", "VARCHAR"), ("bounce_subtype", "VARCHAR"), ("reason", "VARCHAR"),
    ("subject", "VARCHAR"), ("tags", "JSON"),
]
OLD_DDL = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.events (
    event_id VARCHAR PRIMARY KEY, service VARCHAR, message_id VARCHAR,
    provider_message_id VARCHAR, event_type VARCHAR NOT NULL, recipient VARCHAR,
    occurred_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL, bounce_type VARCHAR,
    bounce_subtype VARCHAR, reason VARCHAR, subject VARCHAR, tags JSON
);
"""


def event(n: int, kind: EventType = EventType.SEND) -> Event:
    return Event(event_id=f"e{n}", service="svc", message_id=f"m{n}", event_type=kind,
                 recipient=f"r{n}@example.org", occurred_at=AT, subject="Hello",
                 tags={"n": str(n)})


def stored(warehouse: DuckDBWarehouse) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in warehouse.query(
        f"SELECT event_id, event_type FROM {SCHEMA}.events ORDER BY event_id")]


def constraints(warehouse: DuckDBWarehouse) -> set[str]:
    return {r[0] for r in warehouse.query(
        "SELECT constraint_type FROM duckdb_constraints() WHERE schema_name = ?"
        " AND table_name = 'events'", [SCHEMA])}


@pytest.fixture
def warehouse(tmp_path):
    return DuckDBWarehouse(tmp_path / "w.duckdb")


def test_writes_count_and_store_each_event_id_once(warehouse):
    assert warehouse.write_events([event(1), event(2), event(1)]) == 2
    assert warehouse.write_events([event(2), event(3)]) == 1
    # The same id again, however its other fields differ, is the event already stored.
    assert warehouse.write_events([event(3, EventType.DELIVERY)]) == 0
    assert stored(warehouse) == [("e1", "send"), ("e2", "send"), ("e3", "send")]


def test_the_table_keeps_the_contract_columns_without_a_key(warehouse):
    warehouse.ensure_schema()
    columns = warehouse.query(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = 'events' ORDER BY ordinal_position", [SCHEMA])
    assert columns == CONTRACT
    assert "PRIMARY KEY" not in constraints(warehouse)


def test_concurrent_writers_in_one_process_store_each_event_once(warehouse):
    warehouse.ensure_schema()
    events = [event(n) for n in range(200)]
    counts: list[int] = []
    start = threading.Barrier(4)

    def write() -> None:
        start.wait()
        counts.append(DuckDBWarehouse(warehouse.path).write_events(events))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == [0, 0, 0, 200]
    assert len(stored(warehouse)) == 200


def test_an_old_primary_key_file_is_migrated_once_and_keeps_its_rows(warehouse):
    with duckdb.connect(str(warehouse.path)) as con:
        con.execute(OLD_DDL)
        con.execute(f"INSERT INTO {SCHEMA}.events SELECT 'e' || i, 'svc', 'm' || i, NULL,"
                    " 'send', 'r', $at, $at, NULL, NULL, NULL, 'Old', '{}' FROM range(5) t(i)",
                    {"at": AT})
    warehouse.create_service_views(["svc"])  # a view over the old table survives the move
    assert "PRIMARY KEY" not in constraints(warehouse)

    assert warehouse.write_events([event(n) for n in range(3, 8)]) == 3
    assert warehouse.write_events([event(n) for n in range(8)]) == 0
    assert [r[0] for r in stored(warehouse)] == [f"e{n}" for n in range(8)]
    assert warehouse.query(f"SELECT count(*) FROM {SCHEMA}.events_svc") == [(8,)]
    old = warehouse.query(f"SELECT subject, recorded_at FROM {SCHEMA}.events"
                          " WHERE event_id = 'e0'")
    assert old == [("Old", AT)]
    DuckDBWarehouse(warehouse.path).ensure_schema()
    assert len(stored(warehouse)) == 8
    tables = warehouse.query("SELECT table_name FROM information_schema.tables"
                             " WHERE table_schema = ? ORDER BY 1", [SCHEMA])
    assert tables == [("events",), ("events_svc",)]


def row_groups(path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute(
            f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{SCHEMA}.events')"
        ).fetchone()[0])


def test_writes_keep_row_groups_small_so_a_checkpoint_rewrites_little(warehouse):
    for start in range(0, 3 * ROW_GROUP_SIZE, 6_000):  # flushes of 6,000 events
        assert warehouse.write_events([event(n) for n in range(start, start + 6_000)]) == 6_000
    assert row_groups(warehouse.path) >= 3  # DuckDB's default size would hold all in one


def test_connections_of_one_process_share_the_file_and_let_it_go_together(warehouse):
    warehouse.write_events([event(1)])
    with warehouse.connect() as outer:
        with warehouse.connect(read_only=True) as inner:  # nested: the same attachment
            assert inner.execute(f"SELECT count(*) FROM {SCHEMA}.events").fetchone() == (1,)
        outer.execute(f"DELETE FROM {SCHEMA}.events")
    other = subprocess.run(  # the process has let the file go: another one may write it
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).execute("
         f"\"INSERT INTO {SCHEMA}.events (event_id, event_type, occurred_at, recorded_at)"
         " VALUES ('x', 'send', now(), now())\")", str(warehouse.path)],
        capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    assert stored(warehouse) == [("x", "send")]


INTERRUPTED_QUERY = """
import os, signal, sys, threading, time
from pathlib import Path
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if our parent ignores SIGINT
warehouse = DuckDBWarehouse(Path(sys.argv[1]))
warehouse.ensure_schema()
querying = threading.Event()

def interrupt_the_query():
    querying.wait()
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt_the_query, daemon=True).start()
try:
    with warehouse.connect() as con:  # a query that runs until it is interrupted
        # On one thread, as a write runs (WRITE_SETTINGS): with more, DuckDB's connection thread
        # can sit waiting on another thread's task without looking for signals.
        con.execute("SET threads = 1")
        querying.set()
        con.execute("SELECT count(*) FROM range(1000000000000) a WHERE a % 7 = 3").fetchall()
except BaseException as exc:
    print(type(exc).__name__)
print(warehouse.query("SELECT count(*) FROM notify_events.events")[0][0])
"""


def test_an_interrupt_during_a_query_stays_an_interrupt(tmp_path):
    """DuckDB cancels the query and raises RuntimeError; code that logs an Exception and goes
    on would run past the operator's stop, so the warehouse raises KeyboardInterrupt."""
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_QUERY, str(tmp_path / "w.duckdb")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["KeyboardInterrupt", "0"]  # and the file is usable after
