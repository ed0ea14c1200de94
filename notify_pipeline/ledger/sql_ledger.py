"""What the SQL ledgers share: each call's transaction, with the decisions left to the rulebook.

A backend supplies only its dialect, `Statements` in its own SQL and parameter style plus how it
binds a time and a list, and its connection handling: `_tx` for one write transaction, `_read` for
one query outside any.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Protocol

from notify_pipeline.events import Event, utcnow
from notify_pipeline.ledger.base import (
    BatchStatus,
    Claim,
    ClaimResult,
    Ledger,
    MessageState,
    Quota,
    QuotaUsage,
    Settled,
    Settlement,
    Suppression,
    Window,
)
from notify_pipeline.ledger.rules import (
    NEW_CLAIM,
    ClaimDecision,
    HeldMessage,
    Meter,
    QuotaBook,
    batch_blocked,
    batch_ready,
    cap_in_force,
    claims_in_key_order,
    decide_claim,
    deferred,
    final_statuses,
    quotas_in_key_order,
    require_terminal,
    reserve_tokens,
    suppressions_in_key_order,
    window_bounds,
)

# Minute counters older than this are deleted as claims go by; day counters are kept.
MINUTE_COUNTERS_KEPT = timedelta(hours=1)


class Cursor(Protocol):
    """The part of a DB-API cursor the shared calls use (sqlite3's and psycopg's both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: str, params: Sequence[Any], /) -> Cursor: ...

    def executemany(self, query: str, params_seq: Iterable[Sequence[Any]], /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Statements:
    """One backend's SQL. Each names its parameters in order; `→` what its rows hold."""

    insert_claim: str  # service, message_id, inbox_key, owner, lease end, now; none on conflict
    lock_message: str  # now, service, message_id → state, inbox_key, owner, lease live, attempts
    take_over: str  # owner, lease end, inbox_key, now, service, message_id; one more attempt
    release: str  # service, message_id, owner: an open claim back to `claimed`, lease over
    release_unattempted: str  # the same for a `claimed` one, and its claim not counted
    begin_handoff: str  # service, message_id, owner: `claimed` → `handing_off`
    finish: str  # state, provider_message_id, now, service, message_id, owner: open → state
    insert_event: str  # event_id, body
    insert_status: str  # a `StatusRow`; an existing row for its recipient stays
    upsert_suppression: str  # recipient, reason, event_id, expires_at; the later end stays
    final_status: str  # service, message_id, recipient → event_type
    pending_events: str  # limit → seq, body, oldest first
    ack_events: str  # seqs (a list)
    suppressed: str  # recipients (a list), now → recipient
    suppressions: str  # now → recipient, reason, event_id, expires_at; by recipient
    remove_suppression: str  # recipient
    state_of: str  # service, message_id → state
    create_batch: str  # batch_id: an untaken row with no attempts, unless there is one
    lock_batch: str  # now, batch_id → owner, lease live
    take_batch: str  # owner, lease end, batch_id → attempts, one more
    batch_status: str  # now, batch_id → attempts, owner, lease live
    release_batch: str  # retry time, batch_id, owner: no owner, lease over at the retry time
    unclaim: str  # service, message_id: drop the row this transaction just inserted
    lock_counter: str  # scope, window, window start → used (a new row at 0), locked
    read_counter: str  # scope, window, window start → used
    set_counter: str  # used, scope, window, window start
    prune_counters: str  # scope, before: the scope's minute counters that started earlier go
    quota_start: str  # scope → first_day (ISO date)
    insert_quota_start: str  # scope, first_day; an existing row stays
    lock_bucket: str  # bucket, tokens, now → tokens, updated_at (a new row full), locked
    set_bucket: str  # tokens, updated_at, bucket


def _one(cur: Cursor) -> tuple[Any, ...]:
    """The row a statement must return (the row was inserted or locked just before)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("ledger row vanished inside its own transaction")
    return tuple(row)


class SqlLedger(Ledger):
    """A `Ledger` over SQL tables; every write is one short transaction."""

    sql: ClassVar[Statements]

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Cursor]:
        """One write transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for one query outside any write transaction."""

    @staticmethod
    @abstractmethod
    def _when(moment: datetime) -> object:
        """A time as this database's columns hold it."""

    @staticmethod
    @abstractmethod
    def _list(values: list[Any]) -> object:
        """A list bound as one parameter."""

    @staticmethod
    @abstractmethod
    def _moment(stored: Any) -> datetime:
        """A time as this database's columns hold it, back as a datetime."""

    def claim(
        self, claims: Sequence[Claim], *, owner: str, lease_seconds: float, now: datetime
    ) -> list[ClaimResult]:
        expires = now + timedelta(seconds=lease_seconds)
        decisions: dict[int, ClaimDecision] = {}
        with self._tx() as cur:
            book = self._lock_quotas(cur, claims, now)
            for i in claims_in_key_order(claims):
                decisions[i] = self._claim_one(cur, claims[i], owner, now, expires)
            for i, claim in enumerate(claims):  # charged in the claims' order: arrival order
                if decisions[i].is_new:
                    decisions[i] = self._charge(cur, claim, book)
            self._save_charges(cur, book)
            self._queue(cur, [
                event for i, c in enumerate(claims)
                if decisions[i].queues_events for event in c.queued_events
            ])
        return [decisions[i].result for i in range(len(claims))]

    def _claim_one(
        self, cur: Cursor, claim: Claim, owner: str, now: datetime, expires: datetime
    ) -> ClaimDecision:
        """The primary key picks one of two first claimers; a later claim locks the row."""
        key, at, until = (claim.service, claim.message_id), self._when(now), self._when(expires)
        if cur.execute(self.sql.insert_claim, (*key, claim.inbox_key, owner, until, at)).rowcount:
            return NEW_CLAIM
        state, inbox_key, holder, lease_live, attempts = _one(
            cur.execute(self.sql.lock_message, (at, *key)))
        held = HeldMessage(MessageState(state), inbox_key, holder, bool(lease_live), int(attempts))
        decision = decide_claim(held, inbox_key=claim.inbox_key, owner=owner)
        if decision.take_over:
            cur.execute(self.sql.take_over, (owner, until, claim.inbox_key, at, *key))
        return decision

    def _charge(self, cur: Cursor, claim: Claim, book: QuotaBook) -> ClaimDecision:
        """A first claim takes its cost from its quotas, or is undone (its row was inserted by
        this transaction) and deferred. A take-over is never charged: the first claim was."""
        refused = book.charge(claim.quotas, claim.cost)
        if refused is None:
            return NEW_CLAIM
        cur.execute(self.sql.unclaim, (claim.service, claim.message_id))
        return deferred(refused)

    def _lock_quotas(self, cur: Cursor, claims: Sequence[Claim], now: datetime) -> QuotaBook:
        """Lock the counters of every quota the claims use, before any message row."""
        meters = []
        for quota in quotas_in_key_order(claims):
            meters.append(self._meter(cur, quota, now, self.sql.lock_counter))
            if quota.window is Window.MINUTE:  # under its current counter's lock, so no deadlock
                cur.execute(self.sql.prune_counters,
                            (quota.scope, self._when(now - MINUTE_COUNTERS_KEPT)))
        return QuotaBook(meters)

    def _meter(self, cur: Cursor, quota: Quota, now: datetime, query: str) -> Meter:
        start, end = window_bounds(quota.window, now)
        rows = cur.execute(query, (quota.scope, quota.window.value, self._when(start))).fetchall()
        first_day = None
        if quota.schedule:
            found = cur.execute(self.sql.quota_start, (quota.scope,)).fetchall()
            first_day = date.fromisoformat(found[0][0]) if found else None
        used = int(rows[0][0]) if rows else 0
        return Meter(quota, start, end, used, cap_in_force(quota, first_day, start.date()),
                     first_day)

    def _save_charges(self, cur: Cursor, book: QuotaBook) -> None:
        for meter in book.meters.values():
            if not meter.charged:
                continue
            q = meter.quota
            cur.execute(self.sql.set_counter,
                        (meter.used, q.scope, q.window.value, self._when(meter.start)))
            if q.schedule and meter.first_day is None:
                cur.execute(self.sql.insert_quota_start, (q.scope, meter.start.date().isoformat()))

    def quota_usage(self, quotas: Sequence[Quota], *, now: datetime) -> list[QuotaUsage]:
        with self._read() as cur:
            meters = [self._meter(cur, quota, now, self.sql.read_counter) for quota in quotas]
        return [QuotaUsage(m.quota, m.start, m.used, m.cap, m.first_day) for m in meters]

    def take_tokens(
        self, bucket: str, cost: float, *, rate: float, burst: float, now: float
    ) -> float:
        with self._tx() as cur:
            tokens, updated = _one(cur.execute(self.sql.lock_bucket, (bucket, burst, now)))
            left, at, wait = reserve_tokens(float(tokens), float(updated), now=now, cost=cost,
                                            rate=rate, burst=burst)
            cur.execute(self.sql.set_bucket, (left, at, bucket))
        return wait

    def release(self, keys: Sequence[tuple[str, str]], *, owner: str,
                attempted: bool = True) -> None:
        statement = self.sql.release if attempted else self.sql.release_unattempted
        with self._tx() as cur:
            cur.executemany(statement, [(*key, owner) for key in sorted(keys)])

    def settle(
        self, settlements: Sequence[Settlement], *, owner: str,
        begin: tuple[str, str] | None = None,
    ) -> Settled:
        for settlement in settlements:
            require_terminal(settlement.state)
        at = self._when(utcnow())
        recorded: list[bool] = []
        events: list[Event] = []
        suppressions: list[Suppression] = []
        with self._tx() as cur:
            for s in settlements:
                settle = (s.state.value, s.provider_message_id, at, s.service, s.message_id)
                owned = cur.execute(self.sql.finish, (*settle, owner)).rowcount == 1
                if owned:
                    events += s.events
                    suppressions += s.suppressions
                recorded.append(owned)
            self._queue(cur, events)
            self._suppress(cur, suppressions)  # all at once, in key order: no deadlocks
            begun = None if begin is None else (
                cur.execute(self.sql.begin_handoff, (*begin, owner)).rowcount == 1)
        return Settled(tuple(recorded), begun)

    def add_events(
        self, events: Sequence[Event], suppressions: Sequence[Suppression] = ()
    ) -> None:
        with self._tx() as cur:
            self._queue(cur, events)
            self._suppress(cur, suppressions)

    def add_suppressions(self, suppressions: Sequence[Suppression]) -> None:
        with self._tx() as cur:
            self._suppress(cur, suppressions)

    def suppressions(self, *, now: datetime) -> list[Suppression]:
        rows = self._rows(self.sql.suppressions, (self._when(now),))
        return [Suppression(str(r), str(reason), str(event), self._moment(until))
                for r, reason, event, until in rows]

    def remove_suppression(self, recipient: str) -> bool:
        with self._tx() as cur:
            cur.execute(self.sql.remove_suppression, (recipient.lower(),))
            return bool(cur.rowcount > 0)

    def _queue(self, cur: Cursor, events: Sequence[Event]) -> None:
        """Outbox rows in the given order, then the final statuses they settle."""
        cur.executemany(self.sql.insert_event, [(e.event_id, e.to_json()) for e in events])
        cur.executemany(self.sql.insert_status, final_statuses(events))

    def _suppress(self, cur: Cursor, suppressions: Iterable[Suppression]) -> None:
        cur.executemany(self.sql.upsert_suppression, [
            (s.recipient, s.reason, s.event_id, self._when(s.expires_at))
            for s in suppressions_in_key_order(suppressions)
        ])

    def _rows(self, query: str, params: Sequence[Any]) -> list[Any]:
        with self._read() as cur:
            return cur.execute(query, params).fetchall()

    def final_status(self, service: str, message_id: str, recipient: str) -> str | None:
        rows = self._rows(self.sql.final_status, (service, message_id, recipient.lower()))
        return str(rows[0][0]) if rows else None

    def pending_events(self, limit: int) -> list[tuple[int, Event]]:
        rows = self._rows(self.sql.pending_events, (limit,))
        return [(int(seq), Event.from_json(body)) for seq, body in rows]

    def ack_events(self, seqs: Sequence[int]) -> None:
        with self._tx() as cur:
            cur.execute(self.sql.ack_events, (self._list(list(seqs)),))

    def suppressed(self, recipients: Iterable[str], *, now: datetime) -> set[str]:
        wanted = sorted({r.lower() for r in recipients})
        rows = self._rows(self.sql.suppressed, (self._list(wanted), self._when(now)))
        return {str(row[0]) for row in rows}

    def state_of(self, service: str, message_id: str) -> MessageState | None:
        rows = self._rows(self.sql.state_of, (service, message_id))
        return MessageState(rows[0][0]) if rows else None

    def acquire_batch(
        self, batch_id: str, *, owner: str, lease_seconds: float, now: datetime
    ) -> int | None:
        expires = self._when(now + timedelta(seconds=lease_seconds))
        with self._tx() as cur:
            cur.execute(self.sql.create_batch, (batch_id,))
            holder, lease_live = _one(cur.execute(self.sql.lock_batch, (self._when(now), batch_id)))
            if batch_blocked(holder, owner=owner, lease_live=bool(lease_live)):
                return None
            (attempts,) = _one(cur.execute(self.sql.take_batch, (owner, expires, batch_id)))
            return int(attempts)

    def batch_status(self, batch_id: str, *, now: datetime) -> BatchStatus:
        rows = self._rows(self.sql.batch_status, (self._when(now), batch_id))
        if not rows:
            return BatchStatus(0, True)
        attempts, holder, lease_live = rows[0]
        return BatchStatus(int(attempts), batch_ready(holder, lease_live=bool(lease_live)))

    def release_batch(
        self, batch_id: str, *, owner: str, retry_after_seconds: float, now: datetime
    ) -> None:
        retry_at = self._when(now + timedelta(seconds=retry_after_seconds))
        with self._tx() as cur:
            cur.execute(self.sql.release_batch, (retry_at, batch_id, owner))
