"""The production ledger: tables in one Postgres schema, shared by every daemon and run.

Same semantics as `SqliteLedger`; Postgres row locks make them hold across hosts. A claim first
tries `INSERT ... ON CONFLICT DO NOTHING` (the primary key picks one of two first claimers) and
otherwise locks the existing row with `SELECT ... FOR UPDATE`, so take-overs are decided one
transaction at a time. Rows are locked in key order (messages, then recipient statuses, then
suppressions), so concurrent batches over overlapping messages cannot deadlock.

`owner_is_dead` only knows this host's processes; owners on other hosts are covered by leases.
A failed call is never retried here: a commit whose reply was lost would be replayed as someone
else's claim. The next call reconnects instead.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from notify_pipeline.events import Event
from notify_pipeline.ledger.base import (
    FINAL_EVENT_TYPES,
    BatchStatus,
    Claim,
    ClaimResult,
    ClaimStatus,
    Ledger,
    MessageState,
    Suppression,
    owner_is_dead,
)

DEFAULT_SCHEMA = "notify_ledger"
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
)

Cursor = psycopg.Cursor[tuple[Any, ...]]


def _one(cur: Cursor) -> tuple[Any, ...]:
    """The row a statement must return (the row was inserted or locked just before)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("ledger row vanished inside its own transaction")
    return row


def redacted(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    return make_conninfo("", **params)


class PostgresLedger(Ledger):
    """A ledger in its own Postgres schema; each write is one short transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        connect_timeout_seconds: int = 10,
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
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
            for ddl in TABLES:
                cur.execute(ddl)

    @contextmanager
    def _cursor(self) -> Iterator[Cursor]:
        with self._lock:
            if self._conn.broken:
                self._conn = self._connect()
            with self._conn.cursor() as cur:
                yield cur

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        with self._cursor() as cur, self._conn.transaction():
            yield cur

    def claim(
        self, claims: Sequence[Claim], *, owner: str, lease_seconds: float, now: datetime
    ) -> list[ClaimResult]:
        expires = now + timedelta(seconds=lease_seconds)
        in_lock_order = sorted(range(len(claims)),
                               key=lambda i: (claims[i].service, claims[i].message_id))
        results: dict[int, ClaimResult] = {}
        with self._tx() as cur:
            for i in in_lock_order:
                results[i] = self._claim_one(cur, claims[i], owner, now, expires)
            self._queue(cur, [
                event for i, c in enumerate(claims)
                if results[i].status is ClaimStatus.CLAIMED for event in c.queued_events
            ])
        return [results[i] for i in range(len(claims))]

    @staticmethod
    def _claim_one(
        cur: Cursor, claim: Claim, owner: str, now: datetime, expires: datetime
    ) -> ClaimResult:
        key = (claim.service, claim.message_id)
        cur.execute(
            "INSERT INTO messages VALUES (%s, %s, 'claimed', %s, %s, %s, 1, NULL, %s)"
            " ON CONFLICT DO NOTHING",
            (*key, claim.inbox_key, owner, expires, now),
        )
        if cur.rowcount == 1:
            return ClaimResult(ClaimStatus.CLAIMED, 1)
        row = _one(cur.execute(
            "SELECT state, inbox_key, owner, lease_expires_at > %s, attempts FROM messages"
            " WHERE service = %s AND message_id = %s FOR UPDATE",
            (now, *key),
        ))
        state, inbox_key, holder, lease_live, attempts = MessageState(row[0]), *row[1:]
        same_item = inbox_key == claim.inbox_key
        if state.terminal:
            return ClaimResult(ClaimStatus.DONE if same_item else ClaimStatus.DUPLICATE, attempts)
        if holder == owner:
            return ClaimResult(ClaimStatus.DUPLICATE, attempts)
        if lease_live and not owner_is_dead(holder):
            return ClaimResult(ClaimStatus.BUSY if same_item else ClaimStatus.DUPLICATE, attempts)
        cur.execute(
            "UPDATE messages SET owner = %s, lease_expires_at = %s, inbox_key = %s,"
            " attempts = attempts + 1, updated_at = %s WHERE service = %s AND message_id = %s",
            (owner, expires, claim.inbox_key, now, *key),
        )
        if state is MessageState.HANDING_OFF:
            return ClaimResult(ClaimStatus.AMBIGUOUS, attempts + 1)
        return ClaimResult(ClaimStatus.CLAIMED, attempts + 1)

    def release(self, keys: Sequence[tuple[str, str]], *, owner: str) -> None:
        with self._tx() as cur:
            cur.executemany(
                "UPDATE messages SET state = 'claimed', lease_expires_at = '-infinity'"
                " WHERE service = %s AND message_id = %s AND owner = %s"
                " AND state IN ('claimed', 'handing_off')",
                [(service, message_id, owner) for service, message_id in sorted(keys)],
            )

    def begin_handoff(self, service: str, message_id: str, *, owner: str) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE messages SET state = 'handing_off' WHERE service = %s"
                " AND message_id = %s AND owner = %s AND state = 'claimed'",
                (service, message_id, owner),
            )
            return cur.rowcount == 1

    def finish(
        self,
        service: str,
        message_id: str,
        *,
        owner: str,
        state: MessageState,
        events: Sequence[Event],
        provider_message_id: str | None = None,
        suppressions: Sequence[Suppression] = (),
    ) -> bool:
        if not state.terminal:
            raise ValueError(f"finish needs a terminal state, not {state}")
        with self._tx() as cur:
            cur.execute(
                "UPDATE messages SET state = %s, provider_message_id = %s, updated_at = now()"
                " WHERE service = %s AND message_id = %s AND owner = %s"
                " AND state IN ('claimed', 'handing_off')",
                (state.value, provider_message_id, service, message_id, owner),
            )
            if cur.rowcount != 1:
                return False
            self._queue(cur, events)
            self._suppress(cur, suppressions)
            return True

    def add_events(
        self, events: Sequence[Event], suppressions: Sequence[Suppression] = ()
    ) -> None:
        with self._tx() as cur:
            self._queue(cur, events)
            self._suppress(cur, suppressions)

    def final_status(self, service: str, message_id: str, recipient: str) -> str | None:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT event_type FROM recipient_status WHERE service = %s AND message_id = %s"
                " AND recipient = %s",
                (service, message_id, recipient.lower()),
            ).fetchone()
        return str(row[0]) if row else None

    def add_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        with self._tx() as cur:
            self._suppress(cur, suppressions)

    @staticmethod
    def _queue(cur: Cursor, events: Iterable[Event]) -> None:
        """Outbox rows in the given order; first final status per recipient wins."""
        events = list(events)
        cur.executemany(
            "INSERT INTO outbox (event_id, body) VALUES (%s, %s)",
            [(e.event_id, e.to_json()) for e in events],
        )
        statuses = sorted(  # stable: the first of two for one recipient stays first
            (e.service, e.message_id, e.recipient.lower(), e.event_type.value, e.event_id)
            for e in events
            if e.event_type in FINAL_EVENT_TYPES and e.service and e.message_id and e.recipient
        )
        cur.executemany(
            "INSERT INTO recipient_status VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            statuses,
        )

    @staticmethod
    def _suppress(cur: Cursor, suppressions: Iterable[Suppression]) -> None:
        rows = [(s.recipient.lower(), s.reason, s.event_id, s.expires_at) for s in suppressions]
        rows.sort(key=lambda row: row[0])  # stable: a later entry for one recipient stays later
        cur.executemany(
            "INSERT INTO suppressions VALUES (%s, %s, %s, %s) ON CONFLICT (recipient) DO UPDATE"
            " SET reason = excluded.reason, event_id = excluded.event_id,"
            " expires_at = greatest(suppressions.expires_at, excluded.expires_at)",
            rows,
        )

    def pending_events(self, limit: int) -> list[tuple[int, Event]]:
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT seq, body FROM outbox ORDER BY seq LIMIT %s", (limit,)
            ).fetchall()
        return [(int(seq), Event.from_json(body)) for seq, body in rows]

    def ack_events(self, seqs: Sequence[int]) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM outbox WHERE seq = ANY(%s)", (list(seqs),))

    def suppressed(self, recipients: Iterable[str], *, now: datetime) -> set[str]:
        wanted = sorted({r.lower() for r in recipients})
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT recipient FROM suppressions WHERE recipient = ANY(%s) AND expires_at > %s",
                (wanted, now),
            ).fetchall()
        return {str(r[0]) for r in rows}

    def suppressions(self, *, now: datetime) -> list[Suppression]:
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT recipient, reason, event_id, expires_at FROM suppressions"
                " WHERE expires_at > %s ORDER BY recipient", (now,),
            ).fetchall()
        return [Suppression(str(r), str(reason), str(event), until)
                for r, reason, event, until in rows]

    def remove_suppression(self, recipient: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM suppressions WHERE recipient = %s", (recipient.lower(),))
            return cur.rowcount > 0

    def state_of(self, service: str, message_id: str) -> MessageState | None:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT state FROM messages WHERE service = %s AND message_id = %s",
                (service, message_id),
            ).fetchone()
        return MessageState(row[0]) if row else None

    def acquire_batch(
        self, batch_id: str, *, owner: str, lease_seconds: float, now: datetime
    ) -> int | None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO batches VALUES (%s, 0, NULL, '-infinity') ON CONFLICT DO NOTHING",
                (batch_id,),
            )
            holder, lease_live = _one(cur.execute(
                "SELECT owner, lease_expires_at > %s FROM batches WHERE batch_id = %s FOR UPDATE",
                (now, batch_id),
            ))
            if holder and holder != owner and lease_live and not owner_is_dead(holder):
                return None
            (attempts,) = _one(cur.execute(
                "UPDATE batches SET attempts = attempts + 1, owner = %s, lease_expires_at = %s"
                " WHERE batch_id = %s RETURNING attempts",
                (owner, now + timedelta(seconds=lease_seconds), batch_id),
            ))
            return int(attempts)

    def batch_status(self, batch_id: str, *, now: datetime) -> BatchStatus:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT attempts, owner, lease_expires_at <= %s FROM batches WHERE batch_id = %s",
                (now, batch_id),
            ).fetchone()
        if row is None:
            return BatchStatus(0, True)
        attempts, holder, expired = int(row[0]), row[1], bool(row[2])
        return BatchStatus(attempts, expired or (holder is not None and owner_is_dead(holder)))

    def release_batch(
        self, batch_id: str, *, owner: str, retry_after_seconds: float, now: datetime
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE batches SET owner = NULL, lease_expires_at = %s"
                " WHERE batch_id = %s AND owner = %s",
                (now + timedelta(seconds=retry_after_seconds), batch_id, owner),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
