"""The local profile's warehouse: `notify_events.events` in a DuckDB file.

DuckDB lets one process at a time open a file for writing, so each flush opens, writes and closes
promptly, and waits (bounded) when an analyst or another run holds the file.

The table has no primary key: DuckDB loads a key's whole index into memory for every write, so
a flush's memory and time grew with the table's history. Writes deduplicate by `event_id` with
an anti-join instead, one writer at a time per process (DuckDB lets only one process write).

The file is attached with row groups of `ROW_GROUP_SIZE` rows rather than DuckDB's 122,880: each
write's checkpoint rewrites the table's last, partly filled row group, so with the default a
long-lived process's peak memory stepped up with every 40,000 messages (docs/performance.md).
DuckDB keeps that size per attachment, so every connection of the process shares one
attachment, kept while any of them is open (as DuckDB shares one database per file for plain
connections); a tool that opens the file with the default size merely repacks the small groups.

DuckDB answers an interrupt (SIGINT) that arrives during a query by cancelling the query and
raising `RuntimeError("Query interrupted")`, which swallows the `KeyboardInterrupt`: code that
logs an `Exception` and goes on (a worker's failed flush) would then run past the operator's
stop. Every connection here gives the interrupt back as `KeyboardInterrupt`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from notify_pipeline.events import EVENT_COLUMNS, Event, utcnow
from notify_pipeline.warehouse.base import Warehouse, service_table

SCHEMA = "notify_events"
COLUMNS = """
    event_id VARCHAR NOT NULL,
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
"""
DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.events ({COLUMNS});
"""


# A write streams one column past a batch-sized hash table, so a small buffer pool is enough;
# with one thread fewer allocator arenas keep the checkpoint's memory (a write's peak RSS at
# 360,000 rows: 199-226 MB, against 208-239 MB with two threads).
WRITE_SETTINGS = {"memory_limit": "128MB", "threads": "1"}
_WRITERS: dict[Path, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()
ROW_GROUP_SIZE = 32_768
CATALOG = "notify_warehouse"  # what the process's attachment of the file is called


@dataclass
class _Attachment:
    """One in-memory database with the file attached, shared by the process's connections."""

    base: duckdb.DuckDBPyConnection
    users: int = 0


_ATTACHED: dict[Path, _Attachment] = {}
_ATTACHING = threading.Lock()  # held while the file is attached or let go


INTERRUPTED = "Query interrupted"  # what DuckDB raises when SIGINT cancels a query


@contextmanager
def _interrupts_kept() -> Iterator[None]:
    """Within the block, a query that DuckDB cancelled for SIGINT raises KeyboardInterrupt."""
    try:
        yield
    except RuntimeError as exc:
        if type(exc) is RuntimeError and str(exc) == INTERRUPTED:
            raise KeyboardInterrupt from exc
        raise


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _writer(path: Path) -> threading.Lock:
    """The lock that makes a process's check-then-append on one file atomic: DuckDB appends
    never conflict, so two connections could otherwise both add an event neither had seen."""
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(path.resolve(), threading.Lock())


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: Path, *, lock_wait_seconds: float = 60.0) -> None:
        self.path = path
        self._lock_wait = lock_wait_seconds

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for the block, waiting (bounded) while another process holds the file.

        Reads while the process has the file attached share the attachment; other reads open
        it read-only, with no attachment (no checkpoint is ever needed for them)."""
        with _interrupts_kept(), self._connect(read_only=read_only) as con:
            yield con

    @contextmanager
    def _connect(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        key = self.path.resolve()
        with _ATTACHING:
            held = _ATTACHED.get(key)
            if held is None and not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                held = _ATTACHED[key] = _Attachment(self._retrying(self._attach))
            if held is not None:
                held.users += 1
        if held is None:
            with self._retrying(lambda: duckdb.connect(str(self.path), read_only=True)) as con:
                yield con
            return
        try:
            with held.base.cursor() as con:
                con.execute(f"USE {CATALOG}")
                yield con
        finally:
            with _ATTACHING:
                held.users -= 1
                if held.users == 0:
                    del _ATTACHED[key]
                    held.base.close()  # checkpoints, and lets other processes have the file

    def _attach(self) -> duckdb.DuckDBPyConnection:
        base = duckdb.connect(":memory:")
        try:
            quoted = str(self.path).replace("'", "''")
            base.execute(f"ATTACH '{quoted}' AS {CATALOG} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        except BaseException:
            base.close()
            raise
        return base

    def _retrying(self, opener: Callable[[], duckdb.DuckDBPyConnection]
                  ) -> duckdb.DuckDBPyConnection:
        """`opener()`, again with growing pauses while another process holds the file."""
        return retry(
            retry=retry_if_exception(_is_lock_conflict),
            stop=stop_after_delay(self._lock_wait),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        )(opener)()

    def ensure_schema(self) -> None:
        with _writer(self.path), self.connect() as con:
            _ensure(con)

    def write_events(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        now = utcnow()
        frame = pd.DataFrame([e.row(now) for e in events], columns=list(EVENT_COLUMNS))
        frame = frame.drop_duplicates(subset="event_id")
        with _writer(self.path), self.connect() as con:
            for name, value in WRITE_SETTINGS.items():
                con.execute(f"SET {name} = '{value}'")
            _ensure(con)
            con.register("incoming", frame)
            row = con.execute(
                f"INSERT INTO {SCHEMA}.events SELECT * FROM incoming i"  # noqa: S608
                f" WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.events e"
                " WHERE e.event_id = i.event_id)"
            ).fetchone()
            return int(row[0]) if row else 0

    def create_service_views(self, service_ids: Sequence[str]) -> None:
        """One view per service over the events table, named as docs/events.md says.

        DDL takes no parameters; `service_table` has already proved the id is `[a-z0-9-]+`.
        """
        with _writer(self.path), self.connect() as con:
            _ensure(con)
            for sid in service_ids:
                view = f"{SCHEMA}.{service_table(sid)}"
                rows = f"SELECT * FROM {SCHEMA}.events WHERE service = '{sid}'"  # noqa: S608
                con.execute(f"CREATE OR REPLACE VIEW {view} AS {rows}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (tests, CLI summaries)."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, list(params)).fetchall()


def _ensure(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schema, or move a table made with the old primary key to the keyless one."""
    con.execute(DDL)
    if _has_primary_key(con):
        _drop_primary_key(con)


def _has_primary_key(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute(
        "SELECT 1 FROM duckdb_constraints() WHERE schema_name = ? AND table_name = 'events'"
        " AND constraint_type = 'PRIMARY KEY'", [SCHEMA]).fetchall())


def _drop_primary_key(con: duckdb.DuckDBPyConnection) -> None:
    """Copy the rows into a keyless table in one transaction (DuckDB cannot drop a primary
    key): a crash leaves the old table whole, and the next connection migrates again."""
    con.execute("BEGIN TRANSACTION")
    try:
        if _has_primary_key(con):
            con.execute(f"CREATE TABLE {SCHEMA}.events_keyless ({COLUMNS})")
            con.execute(f"INSERT INTO {SCHEMA}.events_keyless"  # noqa: S608
                        f" SELECT * FROM {SCHEMA}.events")
            con.execute(f"DROP TABLE {SCHEMA}.events")
            con.execute(f"ALTER TABLE {SCHEMA}.events_keyless RENAME TO events")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
