"""The local profile's ledger: one SQLite file in WAL mode, shared safely by several processes.

`synchronous=NORMAL` in WAL mode keeps every commit across a killed process (the case the crash
tests prove); a power cut may lose the last commits. Production uses a server database.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

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

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    service TEXT NOT NULL,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL,
    inbox_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    lease_expires_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    provider_message_id TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (service, message_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suppressions (
    recipient TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS recipient_status (
    service TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (service, message_id, recipient)
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    attempts INTEGER NOT NULL,
    owner TEXT,
    lease_expires_at REAL NOT NULL
);
"""


class SqliteLedger(Ledger):
    """A ledger in one SQLite file; every write is a short `BEGIN IMMEDIATE` transaction."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 60.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, isolation_level=None, timeout=busy_timeout_seconds, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._conn.execute(statement)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def claim(
        self, claims: Sequence[Claim], *, owner: str, lease_seconds: float, now: datetime
    ) -> list[ClaimResult]:
        ts = now.timestamp()
        with self._tx() as cur:
            return [self._claim_one(cur, c, owner, ts, ts + lease_seconds) for c in claims]

    def _claim_one(
        self, cur: sqlite3.Cursor, claim: Claim, owner: str, ts: float, expires: float
    ) -> ClaimResult:
        row = cur.execute(
            "SELECT state, inbox_key, owner, lease_expires_at, attempts FROM messages"
            " WHERE service = ? AND message_id = ?",
            (claim.service, claim.message_id),
        ).fetchone()
        if row is None:
            cur.execute(
                "INSERT INTO messages VALUES (?, ?, 'claimed', ?, ?, ?, 1, NULL, ?)",
                (claim.service, claim.message_id, claim.inbox_key, owner, expires, ts),
            )
            self._queue(cur, claim.queued_events)
            return ClaimResult(ClaimStatus.CLAIMED, 1)
        state, inbox_key, holder, lease_expires = MessageState(row[0]), row[1], row[2], row[3]
        attempts = int(row[4])
        if state.terminal:
            same = inbox_key == claim.inbox_key
            return ClaimResult(ClaimStatus.DONE if same else ClaimStatus.DUPLICATE, attempts)
        if holder == owner:
            return ClaimResult(ClaimStatus.DUPLICATE, attempts)
        if lease_expires > ts and not owner_is_dead(holder):
            same = inbox_key == claim.inbox_key
            return ClaimResult(ClaimStatus.BUSY if same else ClaimStatus.DUPLICATE, attempts)
        cur.execute(
            "UPDATE messages SET owner = ?, lease_expires_at = ?, inbox_key = ?,"
            " attempts = attempts + 1, updated_at = ? WHERE service = ? AND message_id = ?",
            (owner, expires, claim.inbox_key, ts, claim.service, claim.message_id),
        )
        if state is MessageState.HANDING_OFF:
            return ClaimResult(ClaimStatus.AMBIGUOUS, attempts + 1)
        self._queue(cur, claim.queued_events)
        return ClaimResult(ClaimStatus.CLAIMED, attempts + 1)

    def release(self, keys: Sequence[tuple[str, str]], *, owner: str) -> None:
        with self._tx() as cur:
            cur.executemany(
                "UPDATE messages SET state = 'claimed', lease_expires_at = 0"
                " WHERE service = ? AND message_id = ? AND owner = ?"
                " AND state IN ('claimed', 'handing_off')",
                [(service, message_id, owner) for service, message_id in keys],
            )

    def begin_handoff(self, service: str, message_id: str, *, owner: str) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE messages SET state = 'handing_off' WHERE service = ? AND message_id = ?"
                " AND owner = ? AND state = 'claimed'",
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
                "UPDATE messages SET state = ?, provider_message_id = ?, updated_at = ?"
                " WHERE service = ? AND message_id = ? AND owner = ?"
                " AND state IN ('claimed', 'handing_off')",
                (state.value, provider_message_id, time.time(), service, message_id, owner),
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
        with self._lock:
            row = self._conn.execute(
                "SELECT event_type FROM recipient_status WHERE service = ? AND message_id = ?"
                " AND recipient = ?",
                (service, message_id, recipient.lower()),
            ).fetchone()
        return str(row[0]) if row else None

    def add_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        with self._tx() as cur:
            self._suppress(cur, suppressions)

    @staticmethod
    def _queue(cur: sqlite3.Cursor, events: Iterable[Event]) -> None:
        events = list(events)
        cur.executemany(
            "INSERT INTO outbox (event_id, body) VALUES (?, ?)",
            [(e.event_id, e.to_json()) for e in events],
        )
        cur.executemany(
            "INSERT INTO recipient_status VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (e.service, e.message_id, e.recipient.lower(), e.event_type.value, e.event_id)
                for e in events
                if e.event_type in FINAL_EVENT_TYPES and e.service and e.message_id
                and e.recipient
            ],
        )

    @staticmethod
    def _suppress(cur: sqlite3.Cursor, suppressions: Iterable[Suppression]) -> None:
        cur.executemany(
            "INSERT INTO suppressions VALUES (?, ?, ?, ?) ON CONFLICT (recipient) DO UPDATE SET"
            " reason = excluded.reason, event_id = excluded.event_id,"
            " expires_at = max(expires_at, excluded.expires_at)",
            [
                (s.recipient.lower(), s.reason, s.event_id, s.expires_at.timestamp())
                for s in suppressions
            ],
        )

    def pending_events(self, limit: int) -> list[tuple[int, Event]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, body FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(seq, Event.from_json(body)) for seq, body in rows]

    def ack_events(self, seqs: Sequence[int]) -> None:
        with self._tx() as cur:
            cur.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def suppressed(self, recipients: Iterable[str], *, now: datetime) -> set[str]:
        wanted = sorted({r.lower() for r in recipients})
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT recipient FROM suppressions WHERE recipient IN ({marks})"  # noqa: S608
                    " AND expires_at > ?",
                    (*chunk, now.timestamp()),
                ).fetchall()
                found.update(r[0] for r in rows)
        return found

    def suppressions(self, *, now: datetime) -> list[Suppression]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT recipient, reason, event_id, expires_at FROM suppressions"
                " WHERE expires_at > ? ORDER BY recipient", (now.timestamp(),),
            ).fetchall()
        return [Suppression(r, reason, event, datetime.fromtimestamp(until, UTC))
                for r, reason, event, until in rows]

    def remove_suppression(self, recipient: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM suppressions WHERE recipient = ?", (recipient.lower(),))
            return cur.rowcount > 0

    def state_of(self, service: str, message_id: str) -> MessageState | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT state FROM messages WHERE service = ? AND message_id = ?",
                (service, message_id),
            ).fetchone()
        return MessageState(row[0]) if row else None

    def acquire_batch(
        self, batch_id: str, *, owner: str, lease_seconds: float, now: datetime
    ) -> int | None:
        ts = now.timestamp()
        with self._tx() as cur:
            row = cur.execute(
                "SELECT attempts, owner, lease_expires_at FROM batches WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()
            if row and row[1] and row[1] != owner and row[2] > ts and not owner_is_dead(row[1]):
                return None
            attempts = (row[0] if row else 0) + 1
            cur.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?) ON CONFLICT (batch_id) DO UPDATE SET"
                " attempts = excluded.attempts, owner = excluded.owner,"
                " lease_expires_at = excluded.lease_expires_at",
                (batch_id, attempts, owner, ts + lease_seconds),
            )
            return int(attempts)

    def batch_status(self, batch_id: str, *, now: datetime) -> BatchStatus:
        with self._lock:
            row = self._conn.execute(
                "SELECT attempts, owner, lease_expires_at FROM batches WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()
        if row is None:
            return BatchStatus(0, True)
        attempts, holder, until = int(row[0]), row[1], float(row[2])
        if holder is None:
            return BatchStatus(attempts, until <= now.timestamp())
        return BatchStatus(attempts, until <= now.timestamp() or owner_is_dead(holder))

    def release_batch(
        self, batch_id: str, *, owner: str, retry_after_seconds: float, now: datetime
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE batches SET owner = NULL, lease_expires_at = ?"
                " WHERE batch_id = ? AND owner = ?",
                (now.timestamp() + retry_after_seconds, batch_id, owner),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
