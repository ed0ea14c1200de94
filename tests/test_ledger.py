"""Both ledgers, same behaviour: atomic claims, hand-off compare-and-set, outbox, suppression,
batch leases. Every behavioural test runs against SQLite and a real Postgres server."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from notify_pipeline.errors import DeferReason
from notify_pipeline.events import Event, EventType, utcnow
from notify_pipeline.ledger import (
    Claim,
    ClaimStatus,
    MessageState,
    Suppression,
    current_owner,
    owner_is_dead,
)
from notify_pipeline.ledger.base import Quota, Settled, Settlement, Window
from notify_pipeline.ledger.postgres import PostgresLedger
from notify_pipeline.ledger.sqlite import SqliteLedger

LEASE = 300.0


@pytest.fixture(params=["sqlite", "postgres"])
def open_ledger(request, tmp_path):
    """Opens another ledger (its own connection) on this test's store; closes them all after."""
    if request.param == "sqlite":
        def make():
            return SqliteLedger(tmp_path / "ledger.sqlite3")
    else:
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue(
            "postgres_schema")

        def make():
            return PostgresLedger(dsn, schema=schema)
    opened = []

    def open_one():
        opened.append(make())
        return opened[-1]

    yield open_one
    for book in opened:
        book.close()


@pytest.fixture
def ledger(open_ledger):
    return open_ledger()


def _event(event_id: str) -> Event:
    return Event(event_id=event_id, service="svc", message_id="m1", event_type=EventType.QUEUED,
                 recipient="a@example.org", occurred_at=utcnow())


def _claim(ledger, owner, key="item-1", message_id="m1", events=()):
    [result] = ledger.claim([Claim("svc", message_id, key, tuple(events))], owner=owner,
                            lease_seconds=LEASE, now=utcnow())
    return result


def dead_owner() -> str:
    """The owner id of a process that has really exited."""
    code = "from notify_pipeline.ledger import current_owner; print(current_owner('r'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_first_claim_wins_and_queues_its_events(ledger):
    assert _claim(ledger, "A", events=[_event("e1")]).status is ClaimStatus.CLAIMED
    assert _claim(ledger, current_owner("B"), key="item-2").status is ClaimStatus.DUPLICATE
    assert [e.event_id for _, e in ledger.pending_events(10)] == ["e1"]


def test_same_item_rerun_while_live_owner_holds_it_is_busy(ledger):
    live = current_owner("A")
    _claim(ledger, live)
    assert _claim(ledger, current_owner("B")).status is ClaimStatus.BUSY


def test_terminal_message_is_done_for_its_own_item_and_duplicate_for_others(ledger):
    _claim(ledger, "A")
    assert ledger.finish("svc", "m1", owner="A", state=MessageState.SENT, events=[])
    assert _claim(ledger, "B").status is ClaimStatus.DONE
    assert _claim(ledger, "B", key="other").status is ClaimStatus.DUPLICATE


def test_claim_of_a_dead_owner_is_taken_over_and_counts_attempts(ledger):
    owner = dead_owner()
    assert owner_is_dead(owner)
    _claim(ledger, owner, events=[_event("q1")])
    result = _claim(ledger, current_owner("B"), events=[_event("q1")])
    assert result.status is ClaimStatus.CLAIMED
    assert result.attempts == 2


def test_handing_off_message_of_a_dead_owner_becomes_ambiguous_never_claimed(ledger):
    owner = dead_owner()
    _claim(ledger, owner)
    assert ledger.begin_handoff("svc", "m1", owner=owner)
    assert _claim(ledger, current_owner("B")).status is ClaimStatus.AMBIGUOUS


def test_expired_lease_is_taken_over_even_if_owner_looks_alive(ledger):
    ledger.claim([Claim("svc", "m1", "item-1")], owner="other-host|1|1|r", lease_seconds=1,
                 now=utcnow() - timedelta(seconds=10))
    assert _claim(ledger, "B").status is ClaimStatus.CLAIMED


def test_begin_handoff_is_a_compare_and_set_on_the_owner(ledger):
    ledger.claim([Claim("svc", "m1", "item-1")], owner="A", lease_seconds=1,
                 now=utcnow() - timedelta(seconds=10))
    _claim(ledger, "B")  # takes the expired claim over
    assert not ledger.begin_handoff("svc", "m1", owner="A")
    assert ledger.begin_handoff("svc", "m1", owner="B")
    assert not ledger.begin_handoff("svc", "m1", owner="B")  # only from `claimed`


def test_finish_by_a_former_owner_writes_nothing(ledger):
    ledger.claim([Claim("svc", "m1", "item-1")], owner="A", lease_seconds=1,
                 now=utcnow() - timedelta(seconds=10))
    _claim(ledger, "B")
    assert not ledger.finish("svc", "m1", owner="A", state=MessageState.SENT,
                             events=[_event("late")])
    assert ledger.pending_events(10) == []
    assert ledger.state_of("svc", "m1") is MessageState.CLAIMED


def test_finish_requires_a_terminal_state(ledger):
    _claim(ledger, "A")
    with pytest.raises(ValueError, match="terminal"):
        ledger.finish("svc", "m1", owner="A", state=MessageState.CLAIMED, events=[])


def test_finish_writes_state_events_and_suppressions_together(ledger):
    _claim(ledger, "A")
    expiry = utcnow() + timedelta(days=1)
    ledger.finish("svc", "m1", owner="A", state=MessageState.SENT, events=[_event("b1")],
                  provider_message_id="Q1",
                  suppressions=[Suppression("Bad@Example.org", "bounce", "b1", expiry)])
    assert ledger.state_of("svc", "m1") is MessageState.SENT
    assert ledger.suppressed(["bad@example.org", "ok@example.org"], now=utcnow()) == {
        "bad@example.org"
    }
    assert [e.event_id for _, e in ledger.pending_events(10)] == ["b1"]


def test_a_release_of_what_was_never_offered_does_not_count_an_attempt(ledger):
    assert _claim(ledger, "A").attempts == 1
    ledger.release([("svc", "m1")], owner="A", attempted=False)
    assert _claim(ledger, "B").attempts == 1  # B's claim is the first that counts
    assert ledger.begin_handoff("svc", "m1", owner="B")
    ledger.release([("svc", "m1")], owner="B", attempted=False)  # offered: not so released
    assert ledger.state_of("svc", "m1") is MessageState.HANDING_OFF
    ledger.release([("svc", "m1")], owner="B")
    assert _claim(ledger, "C").attempts == 2


def test_settle_records_several_and_begins_the_next_in_one_go(ledger):
    for n in (1, 2, 3):
        _claim(ledger, "A", key=f"item-{n}", message_id=f"m{n}")
    ledger.claim([Claim("svc", "m4", "item-4")], owner="A", lease_seconds=1,
                 now=utcnow() - timedelta(seconds=10))
    _claim(ledger, "B", key="item-4", message_id="m4")  # B took m4 over
    for n in (1, 2):
        assert ledger.begin_handoff("svc", f"m{n}", owner="A")
    expiry = utcnow() + timedelta(days=1)
    settled = ledger.settle([
        Settlement("svc", "m1", MessageState.SENT, [_event("e1")], provider_message_id="Q1"),
        Settlement("svc", "m4", MessageState.SENT, [_event("e4")]),
        Settlement("svc", "m2", MessageState.FAILED, [_event("e2")], suppressions=[
            Suppression("Zed@Example.org", "bounce", "e2", expiry),
            Suppression("amy@example.org", "bounce", "e2", expiry)]),
    ], owner="A", begin=("svc", "m3"))

    assert settled == Settled((True, False, True), begun=True)
    assert [ledger.state_of("svc", f"m{n}") for n in (1, 2, 3, 4)] == [
        MessageState.SENT, MessageState.FAILED, MessageState.HANDING_OFF, MessageState.CLAIMED]
    assert [e.event_id for _, e in ledger.pending_events(10)] == ["e1", "e2"]
    assert ledger.suppressed(["zed@example.org", "amy@example.org"], now=utcnow()) == {
        "zed@example.org", "amy@example.org"}
    assert ledger.settle([], owner="B", begin=("svc", "m3")) == Settled((), begun=False)


def test_settle_with_a_non_terminal_state_writes_nothing(ledger):
    _claim(ledger, "A")
    with pytest.raises(ValueError, match="terminal"):
        ledger.settle([Settlement("svc", "m1", MessageState.CLAIMED)], owner="A",
                      begin=("svc", "m1"))
    assert ledger.state_of("svc", "m1") is MessageState.CLAIMED


def test_suppression_expires(ledger):
    ledger.add_suppressions([Suppression("x@example.org", "complaint", "e",
                                         utcnow() + timedelta(seconds=5))])
    assert ledger.suppressed(["x@example.org"], now=utcnow()) == {"x@example.org"}
    assert ledger.suppressed(["x@example.org"], now=utcnow() + timedelta(seconds=6)) == set()


def test_suppressions_are_listed_in_force_and_can_be_lifted(ledger):
    now = utcnow()
    ledger.add_suppressions([
        Suppression("B@example.org", "bounce", "e1", now + timedelta(days=90)),
        Suppression("a@example.org", "complaint", "e2", now + timedelta(days=1)),
        Suppression("old@example.org", "bounce", "e3", now - timedelta(seconds=1)),
    ])
    listed = ledger.suppressions(now=now)
    assert [(s.recipient, s.reason, s.event_id) for s in listed] == [
        ("a@example.org", "complaint", "e2"), ("b@example.org", "bounce", "e1")]
    assert abs((listed[1].expires_at - (now + timedelta(days=90))).total_seconds()) < 1
    assert ledger.remove_suppression("b@EXAMPLE.org") is True
    assert ledger.remove_suppression("b@example.org") is False
    assert ledger.suppressed(["b@example.org"], now=now) == set()
    assert [s.recipient for s in ledger.suppressions(now=now)] == ["a@example.org"]


def test_outbox_ack_removes_only_acknowledged(ledger):
    ledger.add_events([_event("e1"), _event("e2"), _event("e3")])
    pending = ledger.pending_events(2)
    assert [e.event_id for _, e in pending] == ["e1", "e2"]
    ledger.ack_events([seq for seq, _ in pending])
    assert [e.event_id for _, e in ledger.pending_events(10)] == ["e3"]


def test_release_hands_a_claim_back_for_immediate_retry(ledger):
    live = current_owner("A")
    _claim(ledger, live)
    ledger.begin_handoff("svc", "m1", owner=live)
    ledger.release([("svc", "m1")], owner=live)
    result = _claim(ledger, current_owner("B"))
    assert result.status is ClaimStatus.CLAIMED


def test_concurrent_claims_from_two_connections_have_one_winner(open_ledger):
    books = [open_ledger() for _ in range(8)]
    results: list[ClaimStatus] = []
    barrier = threading.Barrier(len(books))

    def claim(book, n):
        barrier.wait()
        results.append(_claim(book, current_owner(f"run{n}"), key=f"item-{n}").status)

    threads = [threading.Thread(target=claim, args=(b, n)) for n, b in enumerate(books)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count(ClaimStatus.CLAIMED) == 1
    assert results.count(ClaimStatus.DUPLICATE) == len(books) - 1


def test_batch_lease_blocks_a_second_live_run_and_counts_attempts(ledger):
    now = utcnow()
    a, b = current_owner("A"), current_owner("B")
    assert ledger.acquire_batch("b1", owner=a, lease_seconds=LEASE, now=now) == 1
    assert ledger.acquire_batch("b1", owner=b, lease_seconds=LEASE, now=now) is None
    assert not ledger.batch_status("b1", now=now).ready
    ledger.release_batch("b1", owner=a, retry_after_seconds=30, now=now)
    status = ledger.batch_status("b1", now=now)
    assert (status.attempts, status.ready) == (1, False)
    assert ledger.batch_status("b1", now=now + timedelta(seconds=31)).ready
    assert ledger.acquire_batch("b1", owner=b, lease_seconds=LEASE, now=now) == 2


def test_batch_held_by_a_dead_run_is_ready(ledger):
    now = utcnow()
    ledger.acquire_batch("b1", owner=dead_owner(), lease_seconds=LEASE, now=now)
    assert ledger.batch_status("b1", now=now).ready


def _final(kind: EventType, event_id: str, recipient: str = "a@example.org") -> Event:
    return Event(event_id=event_id, service="svc", message_id="m1", event_type=kind,
                 recipient=recipient, occurred_at=utcnow())


def test_first_final_status_wins_and_later_events_are_still_queued(ledger):
    ledger.add_events([_final(EventType.SEND, "s1"), _final(EventType.BOUNCE, "b1")])
    ledger.add_events([_final(EventType.DELIVERY, "d1"), _final(EventType.COMPLAINT, "c1")])
    assert ledger.final_status("svc", "m1", "A@example.org") == "bounce"
    assert [e.event_id for _, e in ledger.pending_events(10)] == ["s1", "b1", "d1", "c1"]
    assert ledger.final_status("svc", "m1", "other@example.org") is None


def test_first_final_status_wins_within_one_call_whatever_its_kind(ledger):
    ledger.add_events([_final(EventType.DELIVERY, "d1"), _final(EventType.BOUNCE, "b1")])
    assert ledger.final_status("svc", "m1", "a@example.org") == "delivery"


def test_add_events_writes_suppressions_in_the_same_transaction(ledger):
    expiry = utcnow() + timedelta(days=1)
    ledger.add_events([_final(EventType.COMPLAINT, "c1")],
                      [Suppression("a@example.org", "complaint", "c1", expiry)])
    assert ledger.suppressed(["a@example.org"], now=utcnow()) == {"a@example.org"}


def test_concurrent_take_over_of_an_expired_claim_has_one_winner(open_ledger):
    books = [open_ledger() for _ in range(8)]
    books[0].claim([Claim("svc", "m1", "item-0")], owner="other-host|1|1|r", lease_seconds=1,
                   now=utcnow() - timedelta(seconds=10))
    barrier = threading.Barrier(len(books))

    def take_over(n):
        barrier.wait()
        return _claim(books[n], current_owner(f"run{n}"), key=f"item-{n}").status

    with ThreadPoolExecutor(len(books)) as pool:
        results = list(pool.map(take_over, range(len(books))))
    assert results.count(ClaimStatus.CLAIMED) == 1
    assert results.count(ClaimStatus.DUPLICATE) == len(books) - 1


def test_overlapping_batches_claimed_concurrently_in_any_order_claim_each_message_once(
        open_ledger):
    """Batches lock in key order whatever their input order, so none deadlocks or double-claims."""
    books = [open_ledger() for _ in range(6)]
    keys = [f"m{i:02d}" for i in range(30)]
    barrier = threading.Barrier(len(books))

    def claim_all(n):
        order = random.Random(n).sample(keys, len(keys))
        barrier.wait()
        results = books[n].claim([Claim("svc", k, f"item-{n}") for k in order],
                                 owner=current_owner(f"run{n}"), lease_seconds=LEASE, now=utcnow())
        return [k for k, r in zip(order, results, strict=True) if r.status is ClaimStatus.CLAIMED]

    with ThreadPoolExecutor(len(books)) as pool:
        won = [k for keys_won in pool.map(claim_all, range(len(books))) for k in keys_won]
    assert sorted(won) == keys


# Sending limits: quota counters taken in the claim's own transaction.

def _limited(message_id, cost=1, quotas=None, key=None):
    quotas = quotas if quotas is not None else (PER_MINUTE_3,)
    return Claim("svc", message_id, key or f"item-{message_id}", (_event(f"q-{message_id}"),),
                 cost=cost, quotas=quotas)


PER_MINUTE_3 = Quota("service:svc", Window.MINUTE, cap=3)
NOON = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)


def test_new_claims_over_a_quota_are_deferred_not_claimed_until_the_window_ends(ledger):
    results = ledger.claim([_limited(f"m{i}") for i in range(5)], owner="A",
                           lease_seconds=LEASE, now=NOON)
    assert [r.status for r in results] == [ClaimStatus.CLAIMED] * 3 + [ClaimStatus.DEFERRED] * 2
    assert {r.not_before for r in results[3:]} == {datetime(2026, 12, 1, 12, 1, tzinfo=UTC)}
    assert {r.deferred_by for r in results[3:]} == {DeferReason.PER_MINUTE}
    assert ledger.state_of("svc", "m3") is None, "a deferred claim leaves no row"
    assert {e.event_id for _s, e in ledger.pending_events(10)} == {"q-m0", "q-m1", "q-m2"}

    later = ledger.claim([_limited("m3"), _limited("m4")], owner="B", lease_seconds=LEASE,
                         now=NOON + timedelta(minutes=1))
    assert [r.status for r in later] == [ClaimStatus.CLAIMED] * 2
    [usage] = ledger.quota_usage([PER_MINUTE_3], now=NOON + timedelta(minutes=1))
    assert (usage.used, usage.cap) == (2, 3)


def test_a_quota_admits_claims_in_the_order_given_not_in_lock_order(ledger):
    cap_2 = (Quota("service:svc", Window.MINUTE, cap=2),)
    results = ledger.claim([_limited(m, quotas=cap_2) for m in ("m9", "m1", "m5")], owner="A",
                           lease_seconds=LEASE, now=NOON)
    assert [r.status for r in results] == [ClaimStatus.CLAIMED, ClaimStatus.CLAIMED,
                                           ClaimStatus.DEFERRED]
    assert ledger.state_of("svc", "m5") is None and ledger.state_of("svc", "m9") is not None


def test_old_minute_counters_are_pruned_as_claims_go_by_but_days_are_kept(ledger):
    per_day = Quota("service:svc", Window.DAY, cap=100)
    both = (PER_MINUTE_3, per_day)
    ledger.claim([_limited("m1", quotas=both)], owner="A", lease_seconds=LEASE, now=NOON)
    ledger.claim([_limited("m2", quotas=both)], owner="A", lease_seconds=LEASE,
                 now=NOON + timedelta(hours=2))
    minute, day = ledger.quota_usage(both, now=NOON)
    assert (minute.used, day.used) == (0, 2)


def test_a_quota_counts_recipients_and_a_message_bigger_than_it_goes_alone(ledger):
    first, second = ledger.claim([_limited("big", cost=5), _limited("small", cost=1)],
                                 owner="A", lease_seconds=LEASE, now=NOON)
    assert (first.status, second.status) == (ClaimStatus.CLAIMED, ClaimStatus.DEFERRED)
    [two] = ledger.claim([_limited("two", cost=2)], owner="A", lease_seconds=LEASE,
                         now=NOON + timedelta(minutes=1))
    [one] = ledger.claim([_limited("one", cost=2)], owner="A", lease_seconds=LEASE,
                         now=NOON + timedelta(minutes=1))
    assert (two.status, one.status) == (ClaimStatus.CLAIMED, ClaimStatus.DEFERRED)


def test_only_a_first_claim_is_charged_never_a_duplicate_or_take_over(ledger):
    ledger.claim([_limited("m1")], owner=dead_owner(), lease_seconds=LEASE, now=NOON)
    ledger.claim([_limited("m2")], owner=current_owner("A"), lease_seconds=LEASE, now=NOON)
    again = ledger.claim([_limited("m1"), _limited("m2", key="other-item")],
                         owner="B", lease_seconds=LEASE, now=NOON)
    assert [r.status for r in again] == [ClaimStatus.CLAIMED, ClaimStatus.DUPLICATE]
    assert again[0].attempts == 2, "taken over from the dead owner"
    [usage] = ledger.quota_usage([PER_MINUTE_3], now=NOON)
    assert usage.used == 2


def test_a_claim_takes_every_quota_or_none(ledger):
    per_day_1 = Quota("service:svc", Window.DAY, cap=1)
    quotas = (PER_MINUTE_3, per_day_1)
    ledger.claim([_limited("m1", quotas=quotas)], owner="A", lease_seconds=LEASE, now=NOON)
    [refused] = ledger.claim([_limited("m2", quotas=quotas)], owner="A", lease_seconds=LEASE,
                             now=NOON)
    assert (refused.status, refused.deferred_by) == (ClaimStatus.DEFERRED, DeferReason.PER_DAY)
    assert refused.not_before == datetime(2026, 12, 2, tzinfo=UTC)
    minute, day = ledger.quota_usage(quotas, now=NOON)
    assert (minute.used, day.used) == (1, 1), "the refused claim took nothing from either"


def test_a_warm_up_raises_its_cap_day_by_day_from_the_first_counted_day(ledger):
    warmup = Quota("pool:p1", Window.DAY, schedule=(2, 4))
    [usage] = ledger.quota_usage([warmup], now=NOON)
    assert (usage.cap, usage.first_day) == (2, None), "day 1 until anything is counted"

    def claim_on(day, count, tag):
        at = NOON + timedelta(days=day)
        return [r.status for r in ledger.claim(
            [_limited(f"{tag}{i}", quotas=(warmup,)) for i in range(count)], owner="A",
            lease_seconds=LEASE, now=at)]

    assert claim_on(0, 3, "a").count(ClaimStatus.CLAIMED) == 2
    assert claim_on(1, 5, "b").count(ClaimStatus.CLAIMED) == 4
    assert claim_on(2, 9, "c").count(ClaimStatus.CLAIMED) == 9, "the schedule has run out"
    [day2] = ledger.quota_usage([warmup], now=NOON + timedelta(days=1))
    assert (day2.used, day2.cap, day2.first_day) == (4, 4, NOON.date())


def test_concurrent_claims_from_two_connections_share_one_quota(open_ledger):
    books = [open_ledger() for _ in range(4)]
    quota = Quota("service:svc", Window.DAY, cap=10)
    barrier = threading.Barrier(len(books))

    def claim_some(n):
        barrier.wait()
        results = books[n].claim([_limited(f"w{n}-{i}", quotas=(quota,)) for i in range(6)],
                                 owner=current_owner(f"run{n}"), lease_seconds=LEASE, now=NOON)
        return sum(r.status is ClaimStatus.CLAIMED for r in results)

    with ThreadPoolExecutor(len(books)) as pool:
        assert sum(pool.map(claim_some, range(len(books)))) == 10
    [usage] = books[0].quota_usage([quota], now=NOON)
    assert usage.used == 10


def test_a_token_bucket_is_shared_by_every_connection(open_ledger):
    """Four connections take 40 tokens of a 10/s bucket at one instant: the waits they are
    given space the sends out, so the last waits for 3 s (10 were in the bucket at once)."""
    books = [open_ledger() for _ in range(4)]
    now = 1_000_000.0

    def take(n):
        return [books[n].take_tokens("ses", 1, rate=10, burst=10, now=now) for _ in range(10)]

    with ThreadPoolExecutor(len(books)) as pool:
        waits = sorted(w for ws in pool.map(take, range(len(books))) for w in ws)
    assert waits[:10] == [0.0] * 10
    assert waits[-1] == pytest.approx(3.0)
    assert waits == pytest.approx(sorted([0.0] * 10 + [i / 10 for i in range(1, 31)]))
    later = books[0].take_tokens("ses", 1, rate=10, burst=10, now=now + 10)
    assert later == 0.0, "ten seconds later the debt is paid and the bucket full again"


# Postgres only: what a shared server adds.

def test_postgres_schema_creation_is_safe_for_daemons_starting_together(postgres_dsn,
                                                                        postgres_schema):
    with ThreadPoolExecutor(4) as pool:
        books = list(pool.map(lambda _: PostgresLedger(postgres_dsn, schema=postgres_schema),
                              range(4)))
    try:
        _claim(books[0], "A")
        assert books[3].state_of("svc", "m1") is MessageState.CLAIMED
    finally:
        for book in books:
            book.close()


def test_postgres_password_is_never_shown(postgres_dsn, postgres_schema):
    password = conninfo_to_dict(postgres_dsn)["password"]
    book = PostgresLedger(postgres_dsn, schema=postgres_schema)
    book.close()
    assert "password" not in repr(book) and password not in repr(book)
    closed_port = make_conninfo(postgres_dsn, port=1)
    with pytest.raises(psycopg.OperationalError) as failure:
        PostgresLedger(closed_port, schema=postgres_schema, connect_timeout_seconds=2)
    assert password not in str(failure.value)


def test_postgres_refuses_a_schema_name_that_needs_quoting(postgres_dsn):
    with pytest.raises(ValueError, match="schema"):
        PostgresLedger(postgres_dsn, schema='x"; DROP SCHEMA public; --')


def test_postgres_call_after_a_dropped_connection_fails_once_then_reconnects(postgres_dsn,
                                                                             postgres_schema):
    book = PostgresLedger(postgres_dsn, schema=postgres_schema)
    try:
        _claim(book, "A")
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'notify_pipeline-ledger'")
        with pytest.raises(psycopg.OperationalError):
            book.state_of("svc", "m1")
        assert book.state_of("svc", "m1") is MessageState.CLAIMED
    finally:
        book.close()
