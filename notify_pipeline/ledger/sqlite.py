"""The local profile's ledger: one SQLite file in WAL mode, shared safely by several processes.

`synchronous=NORMAL` in WAL mode keeps every commit across a killed process (the case the crash
tests prove); a power cut may lose the last commits. Production uses a server database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notify_pipeline.ledger.sql_ledger import SqlLedger, Statements

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
CREATE TABLE IF NOT EXISTS quota_counters (
    scope TEXT NOT NULL,
    span TEXT NOT NULL,
    window_start REAL NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (scope, span, window_start)
);
CREATE TABLE IF NOT EXISTS quota_starts (
    scope TEXT PRIMARY KEY,
    first_day TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    bucket TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


STATEMENTS = Statements(
    insert_claim="INSERT INTO messages VALUES (?, ?, 'claimed', ?, ?, ?, 1, NULL, ?)"
    " ON CONFLICT DO NOTHING",
    lock_message="SELECT state, inbox_key, owner, lease_expires_at > ?, attempts FROM messages"
    " WHERE service = ? AND message_id = ?",
    take_over="UPDATE messages SET owner = ?, lease_expires_at = ?, inbox_key = ?,"
    " attempts = attempts + 1, updated_at = ? WHERE service = ? AND message_id = ?",
    release_unattempted="UPDATE messages SET lease_expires_at = 0, attempts = attempts - 1"
    " WHERE service = ? AND message_id = ? AND owner = ? AND state = 'claimed'",
    release="UPDATE messages SET state = 'claimed', lease_expires_at = 0"
    " WHERE service = ? AND message_id = ? AND owner = ? AND state IN ('claimed', 'handing_off')",
    begin_handoff="UPDATE messages SET state = 'handing_off'"
    " WHERE service = ? AND message_id = ? AND owner = ? AND state = 'claimed'",
    finish="UPDATE messages SET state = ?, provider_message_id = ?, updated_at = ?"
    " WHERE service = ? AND message_id = ? AND owner = ? AND state IN ('claimed', 'handing_off')",
    insert_event="INSERT INTO outbox (event_id, body) VALUES (?, ?)",
    insert_status="INSERT INTO recipient_status VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    upsert_suppression="INSERT INTO suppressions VALUES (?, ?, ?, ?) ON CONFLICT (recipient)"
    " DO UPDATE SET reason = excluded.reason, event_id = excluded.event_id,"
    " expires_at = max(expires_at, excluded.expires_at)",
    final_status="SELECT event_type FROM recipient_status"
    " WHERE service = ? AND message_id = ? AND recipient = ?",
    pending_events="SELECT seq, body FROM outbox ORDER BY seq LIMIT ?",
    ack_events="DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
    suppressed="SELECT recipient FROM suppressions"
    " WHERE recipient IN (SELECT value FROM json_each(?)) AND expires_at > ?",
    suppressions="SELECT recipient, reason, event_id, expires_at FROM suppressions"
    " WHERE expires_at > ? ORDER BY recipient",
    remove_suppression="DELETE FROM suppressions WHERE recipient = ?",
    state_of="SELECT state FROM messages WHERE service = ? AND message_id = ?",
    create_batch="INSERT INTO batches VALUES (?, 0, NULL, 0) ON CONFLICT DO NOTHING",
    lock_batch="SELECT owner, lease_expires_at > ? FROM batches WHERE batch_id = ?",
    take_batch="UPDATE batches SET attempts = attempts + 1, owner = ?, lease_expires_at = ?"
    " WHERE batch_id = ? RETURNING attempts",
    batch_status="SELECT attempts, owner, lease_expires_at > ? FROM batches WHERE batch_id = ?",
    release_batch="UPDATE batches SET owner = NULL, lease_expires_at = ?"
    " WHERE batch_id = ? AND owner = ?",
    unclaim="DELETE FROM messages WHERE service = ? AND message_id = ?",
    lock_counter="INSERT INTO quota_counters VALUES (?, ?, ?, 0) ON CONFLICT DO UPDATE"
    " SET used = used RETURNING used",
    read_counter="SELECT used FROM quota_counters WHERE scope = ? AND span = ?"
    " AND window_start = ?",
    set_counter="UPDATE quota_counters SET used = ? WHERE scope = ? AND span = ?"
    " AND window_start = ?",
    prune_counters="DELETE FROM quota_counters WHERE scope = ? AND span = 'minute'"
    " AND window_start < ?",
    quota_start="SELECT first_day FROM quota_starts WHERE scope = ?",
    insert_quota_start="INSERT INTO quota_starts VALUES (?, ?) ON CONFLICT DO NOTHING",
    lock_bucket="INSERT INTO rate_buckets VALUES (?, ?, ?) ON CONFLICT DO UPDATE"
    " SET tokens = tokens RETURNING tokens, updated_at",
    set_bucket="UPDATE rate_buckets SET tokens = ?, updated_at = ? WHERE bucket = ?",
)


class SqliteLedger(SqlLedger):
    """A ledger in one SQLite file; every write is a short `BEGIN IMMEDIATE` transaction, so a
    claim's read and write hold the database's one write lock together."""

    sql = STATEMENTS

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

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._conn.cursor()

    @staticmethod
    def _when(moment: datetime) -> float:
        return moment.timestamp()

    @staticmethod
    def _moment(stored: Any) -> datetime:
        return datetime.fromtimestamp(stored, UTC)

    @staticmethod
    def _list(values: list[Any]) -> str:
        """A JSON array, read back with `json_each` (no limit on the number of values)."""
        return json.dumps(values)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
