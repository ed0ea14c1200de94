"""The local profile's warehouse: `notify_events.events` in a DuckDB file.

DuckDB lets one process at a time open a file for writing, so each flush opens, writes and closes
promptly, and waits (bounded) when an analyst or another run holds the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from notify_pipeline.events import EVENT_COLUMNS, Event, utcnow
from notify_pipeline.warehouse.base import Warehouse, service_table

SCHEMA = "notify_events"
DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    event_id VARCHAR PRIMARY KEY,
    service VARCHAR,
    message_id VARCHAR,
    provider_message_id VARCHAR,
    event_type VARCHAR NOT NULL,
    recipient VARCHAR,
    occurred_at TIMESTAMPTZ NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    bounce_type VARCHAR,
    bounce_subtype VARCHAR,
    reason VARCHAR,
    subject VARCHAR,
    tags JSON
);
"""


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: Path, *, lock_wait_seconds: float = 60.0) -> None:
        self.path = path
        self._lock_wait = lock_wait_seconds

    def _connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        @retry(
            retry=retry_if_exception(_is_lock_conflict),
            stop=stop_after_delay(self._lock_wait),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        )
        def connect() -> duckdb.DuckDBPyConnection:
            return duckdb.connect(str(self.path), read_only=read_only)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return connect()

    def ensure_schema(self) -> None:
        with self._connect() as con:
            con.execute(DDL)

    def write_events(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        now = utcnow()
        frame = pd.DataFrame([e.row(now) for e in events], columns=list(EVENT_COLUMNS))
        frame = frame.drop_duplicates(subset="event_id")
        with self._connect() as con:
            con.execute(DDL)
            con.register("incoming", frame)
            before = _count(con)
            con.execute(
                f"INSERT OR IGNORE INTO {SCHEMA}.events SELECT * FROM incoming"  # noqa: S608
            )
            return _count(con) - before

    def create_service_views(self, service_ids: Sequence[str]) -> None:
        """One view per service over the events table, named as docs/events.md says.

        DDL takes no parameters; `service_table` has already proved the id is `[a-z0-9-]+`.
        """
        with self._connect() as con:
            con.execute(DDL)
            for sid in service_ids:
                view = f"{SCHEMA}.{service_table(sid)}"
                rows = f"SELECT * FROM {SCHEMA}.events WHERE service = '{sid}'"  # noqa: S608
                con.execute(f"CREATE OR REPLACE VIEW {view} AS {rows}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (tests, CLI summaries)."""
        with self._connect(read_only=True) as con:
            return con.execute(sql, list(params)).fetchall()


def _count(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute(f"SELECT count(*) FROM {SCHEMA}.events").fetchone()  # noqa: S608
    return int(row[0]) if row else 0
