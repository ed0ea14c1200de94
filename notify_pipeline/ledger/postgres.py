"""The production ledger: tables in one Postgres schema, shared by every daemon and run.

The rules are `SqlLedger`'s; Postgres row locks make them hold across hosts. A claim first
tries `INSERT ... ON CONFLICT DO NOTHING` (the primary key picks one of two first claimers) and
otherwise locks the existing row with `SELECT ... FOR UPDATE`, so take-overs are decided one
transaction at a time. Rows are locked in key order (quota counters, then messages, then
recipient statuses, then suppressions), so concurrent batches over overlapping messages or
quotas cannot deadlock; the shared send-rate bucket is locked alone, in its own transaction.

`owner_is_dead` only knows this host's processes; owners on other hosts are covered by leases.
A failed call is never retried here: a commit whose reply was lost would be replayed as someone
else's claim. The next call reconnects instead.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Identifier

from notify_pipeline import defaults
from notify_pipeline.ledger.sql_ledger import SqlLedger, Statements

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

TABLES = (
    """CREATE TABLE IF NOT EXISTS messages (
        service text NOT NULL,
        message_id text NOT NULL,
        state text NOT NULL CHECK (state IN
            ('claimed', 'handing_off', 'sent', 'failed', 'suppressed', 'ambiguous')),
        inbox_key text NOT NULL,
        owner text NOT NULL,
        lease_expires_at timestamptz NOT NULL,
        attempts integer NOT NULL,
        provider_message_id text,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (service, message_id)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id text NOT NULL,
        body text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS suppressions (
        recipient text PRIMARY KEY,
        reason text NOT NULL,
        event_id text NOT NULL,
        expires_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS recipient_status (
        service text NOT NULL,
        message_id text NOT NULL,
        recipient text NOT NULL,
        event_type text NOT NULL,
        event_id text NOT NULL,
        PRIMARY KEY (service, message_id, recipient)
    )""",
    """CREATE TABLE IF NOT EXISTS batches (
        batch_id text PRIMARY KEY,
        attempts integer NOT NULL,
        owner text,
        lease_expires_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS quota_counters (
        scope text NOT NULL,
        span text NOT NULL CHECK (span IN ('minute', 'day')),
        window_start timestamptz NOT NULL,
        used integer NOT NULL,
        PRIMARY KEY (scope, span, window_start)
    )""",
    """CREATE TABLE IF NOT EXISTS quota_starts (
        scope text PRIMARY KEY,
        first_day text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS rate_buckets (
        bucket text PRIMARY KEY,
        tokens double precision NOT NULL,
        updated_at double precision NOT NULL
    )""",
)

STATEMENTS = Statements(
    insert_claim="INSERT INTO messages VALUES (%s, %s, 'claimed', %s, %s, %s, 1, NULL, %s)"
    " ON CONFLICT DO NOTHING",
    lock_message="SELECT state, inbox_key, owner, lease_expires_at > %s, attempts FROM messages"
    " WHERE service = %s AND message_id = %s FOR UPDATE",
    take_over="UPDATE messages SET owner = %s, lease_expires_at = %s, inbox_key = %s,"
    " attempts = attempts + 1, updated_at = %s WHERE service = %s AND message_id = %s",
    release_unattempted="UPDATE messages SET lease_expires_at = '-infinity',"
    " attempts = attempts - 1 WHERE service = %s AND message_id = %s AND owner = %s"
    " AND state = 'claimed'",
    release="UPDATE messages SET state = 'claimed', lease_expires_at = '-infinity'"
    " WHERE service = %s AND message_id = %s AND owner = %s"
    " AND state IN ('claimed', 'handing_off')",
    begin_handoff="UPDATE messages SET state = 'handing_off'"
    " WHERE service = %s AND message_id = %s AND owner = %s AND state = 'claimed'",
    finish="UPDATE messages SET state = %s, provider_message_id = %s, updated_at = %s"
    " WHERE service = %s AND message_id = %s AND owner = %s"
    " AND state IN ('claimed', 'handing_off')",
    insert_event="INSERT INTO outbox (event_id, body) VALUES (%s, %s)",
    insert_status="INSERT INTO recipient_status VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING",
    upsert_suppression="INSERT INTO suppressions VALUES (%s, %s, %s, %s) ON CONFLICT (recipient)"
    " DO UPDATE SET reason = excluded.reason, event_id = excluded.event_id,"
    " expires_at = greatest(suppressions.expires_at, excluded.expires_at)",
    final_status="SELECT event_type FROM recipient_status"
    " WHERE service = %s AND message_id = %s AND recipient = %s",
    pending_events="SELECT seq, body FROM outbox ORDER BY seq LIMIT %s",
    ack_events="DELETE FROM outbox WHERE seq = ANY(%s)",
    suppressed="SELECT recipient FROM suppressions WHERE recipient = ANY(%s) AND expires_at > %s",
    suppressions="SELECT recipient, reason, event_id, expires_at FROM suppressions"
    " WHERE expires_at > %s ORDER BY recipient",
    remove_suppression="DELETE FROM suppressions WHERE recipient = %s",
    state_of="SELECT state FROM messages WHERE service = %s AND message_id = %s",
    create_batch="INSERT INTO batches VALUES (%s, 0, NULL, '-infinity') ON CONFLICT DO NOTHING",
    lock_batch="SELECT owner, lease_expires_at > %s FROM batches WHERE batch_id = %s FOR UPDATE",
    take_batch="UPDATE batches SET attempts = attempts + 1, owner = %s, lease_expires_at = %s"
    " WHERE batch_id = %s RETURNING attempts",
    batch_status="SELECT attempts, owner, lease_expires_at > %s FROM batches WHERE batch_id = %s",
    release_batch="UPDATE batches SET owner = NULL, lease_expires_at = %s"
    " WHERE batch_id = %s AND owner = %s",
    unclaim="DELETE FROM messages WHERE service = %s AND message_id = %s",
    lock_counter="INSERT INTO quota_counters VALUES (%s, %s, %s, 0) ON CONFLICT"
    " (scope, span, window_start) DO UPDATE SET used = quota_counters.used RETURNING used",
    read_counter="SELECT used FROM quota_counters WHERE scope = %s AND span = %s"
    " AND window_start = %s",
    set_counter="UPDATE quota_counters SET used = %s WHERE scope = %s AND span = %s"
    " AND window_start = %s",
    prune_counters="DELETE FROM quota_counters WHERE scope = %s AND span = 'minute'"
    " AND window_start < %s",
    quota_start="SELECT first_day FROM quota_starts WHERE scope = %s",
    insert_quota_start="INSERT INTO quota_starts VALUES (%s, %s) ON CONFLICT DO NOTHING",
    lock_bucket="INSERT INTO rate_buckets VALUES (%s, %s, %s) ON CONFLICT (bucket)"
    " DO UPDATE SET tokens = rate_buckets.tokens RETURNING tokens, updated_at",
    set_bucket="UPDATE rate_buckets SET tokens = %s, updated_at = %s WHERE bucket = %s",
)
Cursor = psycopg.Cursor[tuple[Any, ...]]


def redacted(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    return make_conninfo("", **params)


class PostgresLedger(SqlLedger):
    """A ledger in its own Postgres schema; each write is one short transaction."""

    sql = STATEMENTS

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = defaults.LEDGER_SCHEMA,
        connect_timeout_seconds: int = defaults.LEDGER_CONNECT_TIMEOUT_SECONDS,
        statement_timeout_seconds: float = 60.0,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"ledger schema must match {_SCHEMA_NAME.pattern}: {schema!r}")
        self._dsn = dsn
        self.schema = schema
        self._connect_timeout = connect_timeout_seconds
        self._statement_timeout_ms = str(int(statement_timeout_seconds * 1000))
        self._lock = threading.Lock()
        self._conn = self._connect()
        self._create_schema()

    def __repr__(self) -> str:
        return f"PostgresLedger({redacted(self._dsn)!r}, schema={self.schema!r})"

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name="notify_pipeline-ledger",
        )
        conn.execute(
            "SELECT set_config('search_path', %s, false),"
            " set_config('statement_timeout', %s, false)",
            (self.schema, self._statement_timeout_ms),
        )
        return conn

    def _create_schema(self) -> None:
        """Idempotent DDL; the advisory lock stops daemons starting together from racing."""
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ledger:{self.schema}",))
            cur.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(self.schema)))
            for ddl in TABLES:
                cur.execute(ddl)

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._lock:
            if self._conn.broken:
                self._conn = self._connect()
            with self._conn.cursor() as cur:
                yield cur

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        with self._read() as cur, self._conn.transaction():
            yield cur

    @staticmethod
    def _when(moment: datetime) -> datetime:
        return moment

    @staticmethod
    def _moment(stored: Any) -> datetime:
        return stored  # type: ignore[no-any-return]

    @staticmethod
    def _list(values: list[Any]) -> list[Any]:
        return values

    def close(self) -> None:
        with self._lock:
            self._conn.close()
