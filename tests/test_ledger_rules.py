"""The ledger rulebook on plain values: each decision, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from notify_pipeline.errors import DeferReason
from notify_pipeline.events import Event, EventType, utcnow
from notify_pipeline.ledger import Claim, ClaimStatus, MessageState, Suppression, rules
from notify_pipeline.ledger.base import Quota, Window


def alive(_owner: str) -> bool:
    return False


def dead(_owner: str) -> bool:
    return True


def held(state: MessageState = MessageState.CLAIMED, *, inbox_key: str = "item-1",
         owner: str = "A", lease_live: bool = True, attempts: int = 1) -> rules.HeldMessage:
    return rules.HeldMessage(state, inbox_key, owner, lease_live, attempts)


def test_a_claim_that_creates_the_row_is_the_first_attempt_and_queues_its_events():
    new = rules.NEW_CLAIM
    assert (new.result.status, new.result.attempts) == (ClaimStatus.CLAIMED, 1)
    assert new.queues_events and not new.take_over


@pytest.mark.parametrize("state", [s for s in MessageState if s.terminal])
def test_a_terminal_message_is_done_for_its_own_item_and_a_duplicate_for_another(state):
    for inbox_key, status in (("item-1", ClaimStatus.DONE), ("item-2", ClaimStatus.DUPLICATE)):
        decision = rules.decide_claim(held(state, attempts=3, lease_live=False),
                                      inbox_key=inbox_key, owner="B", is_dead=dead)
        assert (decision.result.status, decision.result.attempts) == (status, 3)
        assert not decision.take_over and not decision.queues_events


def test_a_message_this_owner_already_holds_is_a_duplicate_even_past_its_lease():
    for lease_live in (True, False):
        decision = rules.decide_claim(held(lease_live=lease_live), inbox_key="item-1",
                                      owner="A", is_dead=dead)
        assert decision.result.status is ClaimStatus.DUPLICATE
        assert not decision.take_over


def test_a_live_holder_within_its_lease_makes_the_same_item_busy_and_another_a_duplicate():
    for state in (MessageState.CLAIMED, MessageState.HANDING_OFF):
        same = rules.decide_claim(held(state), inbox_key="item-1", owner="B", is_dead=alive)
        other = rules.decide_claim(held(state), inbox_key="item-2", owner="B", is_dead=alive)
        assert (same.result.status, other.result.status) == (ClaimStatus.BUSY,
                                                             ClaimStatus.DUPLICATE)
        assert not same.take_over and not other.take_over
        assert same.result.attempts == 1


@pytest.mark.parametrize(("lease_live", "is_dead"), [(False, alive), (True, dead), (False, dead)])
def test_an_expired_or_dead_holders_claim_is_taken_over_as_one_more_attempt(lease_live, is_dead):
    for inbox_key in ("item-1", "item-2"):
        decision = rules.decide_claim(held(lease_live=lease_live, attempts=2),
                                      inbox_key=inbox_key, owner="B", is_dead=is_dead)
        assert (decision.result.status, decision.result.attempts) == (ClaimStatus.CLAIMED, 3)
        assert decision.take_over and decision.queues_events


def test_a_dead_holder_mid_hand_off_leaves_an_ambiguous_message_never_a_new_claim():
    decision = rules.decide_claim(held(MessageState.HANDING_OFF, lease_live=False),
                                  inbox_key="item-1", owner="B", is_dead=dead)
    assert (decision.result.status, decision.result.attempts) == (ClaimStatus.AMBIGUOUS, 2)
    assert decision.take_over and not decision.queues_events


def test_liveness_is_asked_only_of_a_holder_within_its_lease():
    asked: list[str] = []

    def recording(owner: str) -> bool:
        asked.append(owner)
        return False

    rules.decide_claim(held(lease_live=False), inbox_key="item-1", owner="B", is_dead=recording)
    rules.decide_claim(held(MessageState.SENT), inbox_key="item-1", owner="B", is_dead=recording)
    assert asked == []
    rules.decide_claim(held(), inbox_key="item-1", owner="B", is_dead=recording)
    assert asked == ["A"]


def test_claims_are_locked_in_key_order_whatever_their_input_order():
    claims = [Claim("svc", "m3", "i"), Claim("alpha", "m9", "i"), Claim("svc", "m1", "i")]
    assert rules.claims_in_key_order(claims) == [1, 2, 0]


def test_finish_accepts_only_a_terminal_state():
    for state in MessageState:
        if state.terminal:
            rules.require_terminal(state)
        else:
            with pytest.raises(ValueError, match="terminal"):
                rules.require_terminal(state)


def _event(kind: EventType, event_id: str, recipient: str = "a@example.org",
           message_id: str = "m1") -> Event:
    return Event(event_id=event_id, service="svc", message_id=message_id, event_type=kind,
                 recipient=recipient, occurred_at=utcnow())


def test_only_final_events_with_a_recipient_give_a_status_row():
    events = [_event(EventType.QUEUED, "q"), _event(EventType.SEND, "s"),
              _event(EventType.COMPLAINT, "c"), _event(EventType.DELIVERY_DELAY, "dd"),
              _event(EventType.DELIVERY, "d", recipient=""), _event(EventType.BOUNCE, "b"),
              _event(EventType.FAILURE, "f", message_id="m2"), _event(EventType.REJECT, "r")]
    assert [row[4] for row in rules.final_statuses(events)] == ["b", "r", "f"]


def test_final_status_rows_are_in_key_order_and_the_first_per_recipient_stays_first():
    events = [_event(EventType.DELIVERY, "d1", "Z@example.org"),
              _event(EventType.FAILURE, "f1", "a@example.org"),
              _event(EventType.BOUNCE, "b1", "z@example.org")]
    assert rules.final_statuses(events) == [
        ("svc", "m1", "a@example.org", "failure", "f1"),
        ("svc", "m1", "z@example.org", "delivery", "d1"),
        ("svc", "m1", "z@example.org", "bounce", "b1"),
    ]


def test_suppressions_are_lower_cased_in_key_order_and_a_later_entry_stays_later():
    soon, later = utcnow() + timedelta(days=1), utcnow() + timedelta(days=9)
    rows = rules.suppressions_in_key_order([
        Suppression("Z@Example.org", "bounce", "e1", later),
        Suppression("a@example.org", "complaint", "e2", soon),
        Suppression("z@example.org", "complaint", "e3", soon),
    ])
    assert [(s.recipient, s.event_id) for s in rows] == [
        ("a@example.org", "e2"), ("z@example.org", "e1"), ("z@example.org", "e3")]


def test_a_batch_is_blocked_only_by_another_live_holder_within_its_lease():
    assert rules.batch_blocked("A", owner="B", lease_live=True, is_dead=alive)
    assert not rules.batch_blocked("A", owner="A", lease_live=True, is_dead=alive)
    assert not rules.batch_blocked("A", owner="B", lease_live=False, is_dead=alive)
    assert not rules.batch_blocked("A", owner="B", lease_live=True, is_dead=dead)


def test_a_retry_delay_does_not_block_taking_a_batch_but_keeps_it_from_being_ready():
    assert not rules.batch_blocked(None, owner="B", lease_live=True, is_dead=alive)
    assert not rules.batch_ready(None, lease_live=True, is_dead=alive)
    assert rules.batch_ready(None, lease_live=False, is_dead=alive)


def test_a_batch_is_ready_once_its_lease_ran_out_or_its_holder_died():
    assert not rules.batch_ready("A", lease_live=True, is_dead=alive)
    assert rules.batch_ready("A", lease_live=False, is_dead=alive)
    assert rules.batch_ready("A", lease_live=True, is_dead=dead)


# Quotas and the shared token bucket


def test_windows_are_the_utc_minute_and_the_utc_day():
    at = datetime(2026, 12, 1, 23, 59, 59, 500000, tzinfo=UTC)
    assert rules.window_bounds(Window.MINUTE, at) == (
        datetime(2026, 12, 1, 23, 59, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))
    assert rules.window_bounds(Window.DAY, at) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))


def test_a_warm_up_cap_follows_the_schedule_from_its_first_day_then_lifts():
    warmup = Quota("pool:p", Window.DAY, schedule=(50, 100, 200))
    first = date(2026, 12, 1)
    assert rules.cap_in_force(warmup, None, date(2026, 12, 9)) == 50
    assert [rules.cap_in_force(warmup, first, first + timedelta(days=n)) for n in range(4)] == [
        50, 100, 200, None]
    assert rules.cap_in_force(Quota("service:s", Window.MINUTE, cap=7), None, first) == 7


def test_fits_keeps_to_the_cap_but_never_starves_a_big_message():
    assert rules.fits(2, 3, 1) and not rules.fits(3, 3, 1)
    assert rules.fits(0, 3, 10), "alone in an empty window"
    assert not rules.fits(1, 3, 10)
    assert rules.fits(5, None, 100) and rules.fits(3, 3, 0)


def test_a_quota_book_charges_all_of_a_claims_quotas_or_none():
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    minute = rules.Meter(Quota("s", Window.MINUTE, cap=5), at, at + timedelta(minutes=1), 0, 5,
                         None)
    day = rules.Meter(Quota("s", Window.DAY, cap=2), at, at + timedelta(days=1), 1, 2, None)
    book = rules.QuotaBook([minute, day])
    assert book.charge([minute.quota, day.quota], 1) is None
    refused = book.charge([minute.quota, day.quota], 1)
    assert refused is day and (minute.used, day.used) == (1, 2)
    decision = rules.deferred(refused)
    assert decision.result.status is ClaimStatus.DEFERRED and not decision.queues_events
    assert decision.result.deferred_by is DeferReason.PER_DAY
    assert decision.result.not_before == at + timedelta(days=1)


def test_reserved_tokens_go_into_debt_and_a_clock_behind_never_refills():
    assert rules.reserve_tokens(10, 0, now=0, cost=4, rate=2, burst=10) == (6, 0, 0)
    assert rules.reserve_tokens(0, 0, now=0, cost=4, rate=2, burst=10) == (-4, 0, 2)
    assert rules.reserve_tokens(0, 0, now=0, cost=30, rate=2, burst=10) == (-30, 0, 5)
    left, at, wait = rules.reserve_tokens(0, 100, now=99, cost=1, rate=1, burst=5)
    assert (left, at, wait) == (-1, 100, 2), "one second behind: one more second to wait"
