"""`Pipeline` hand-offs with a transport that allows several at once.

The transport is an in-memory stand-in for our own `Transport` interface; the ledger, inbox,
registry, identity tokens and DKIM keys are the local profile's real ones.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

from notify_pipeline.delivery.base import (
    HandoffResult,
    OutgoingMessage,
    RecipientOutcome,
    RecipientStatus,
    Transport,
)
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    RecipientsDeferredError,
    RetryableDeliveryError,
)
from notify_pipeline.events import utcnow
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.ledger.base import MessageState
from tests.conftest import LocalDeployment
from tests.helpers import hostile_cases, make_harness


class SlowParallelTransport(Transport):
    """Takes `seconds` per hand-off, up to `concurrency` at once, and counts how many overlap.

    Messages whose id is in `unreachable` find the provider down on their first attempt;
    those in `ambiguous` lose their reply.
    """

    def __init__(self, concurrency: int, seconds: float = 0.05, *,
                 unreachable: frozenset[str] = frozenset(),
                 ambiguous: frozenset[str] = frozenset()) -> None:
        self.concurrency = concurrency
        self.seconds = seconds
        self.unreachable, self.ambiguous = set(unreachable), ambiguous
        self.sent: Counter[str] = Counter()
        self.started: list[str] = []
        self.active = self.most_active = 0
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> HandoffResult:
        with self._lock:
            self.started.append(message.message_id)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.seconds)
            with self._lock:
                if message.message_id in self.unreachable:
                    self.unreachable.discard(message.message_id)
                    raise RetryableDeliveryError("provider unreachable")
                self.sent[message.message_id] += 1
            if message.message_id in self.ambiguous:
                raise AmbiguousHandoffError("no reply after the message was sent")
            return HandoffResult(f"p-{message.message_id}", tuple(
                RecipientOutcome(r, RecipientStatus.ACCEPTED, 250) for r in message.recipients))
        finally:
            with self._lock:
                self.active -= 1


def stage_all(local: LocalDeployment, count: int) -> tuple[LocalInbox, str]:
    for n in range(count):
        local.enqueue(local.request(id=f"m{n:02d}", subject=f"m{n:02d}"))
    inbox = LocalInbox(local.home)
    batch_id = inbox.stage(max_items=1000, max_age_seconds=0, now=utcnow())
    assert batch_id is not None
    return inbox, batch_id


def test_hand_offs_overlap_up_to_the_transports_concurrency(local: LocalDeployment) -> None:
    transport = SlowParallelTransport(concurrency=3)
    harness = make_harness(local, transport)
    inbox, batch_id = stage_all(local, 12)

    summary = harness.run(inbox, batch_id)

    assert summary.delivered == 12
    assert transport.sent == Counter({f"m{n:02d}": 1 for n in range(12)})
    assert transport.most_active == 3, "three at once, never more"
    assert transport.started == sorted(transport.started), "begun in claim order"
    assert not inbox.batches(), "every request finished"


def test_one_at_a_time_when_the_transport_allows_one(local: LocalDeployment) -> None:
    transport = SlowParallelTransport(concurrency=1, seconds=0.01)
    harness = make_harness(local, transport)
    inbox, batch_id = stage_all(local, 5)

    assert harness.run(inbox, batch_id).delivered == 5
    assert transport.most_active == 1


def test_an_unreachable_provider_hands_the_rest_back_and_nothing_is_sent_twice(
    local: LocalDeployment,
) -> None:
    transport = SlowParallelTransport(concurrency=3, unreachable=frozenset({"m04"}))
    harness = make_harness(local, transport)
    harness.pipeline.retry_after_seconds = 0
    inbox, batch_id = stage_all(local, 12)

    first = harness.run(inbox, batch_id)
    assert first.deferred > 0 and first.delivered + first.deferred == 12
    assert "m04" not in transport.sent
    assert inbox.batches() == [batch_id], "the batch waits for another attempt"

    second = harness.run(inbox, batch_id)
    assert first.delivered + second.delivered == 12
    assert transport.sent == Counter({f"m{n:02d}": 1 for n in range(12)})
    assert not inbox.batches()


def test_an_ambiguous_hand_off_among_parallel_ones_is_recorded_not_retried(
    local: LocalDeployment,
) -> None:
    transport = SlowParallelTransport(concurrency=3, ambiguous=frozenset({"m02"}))
    harness = make_harness(local, transport)
    inbox, batch_id = stage_all(local, 6)

    summary = harness.run(inbox, batch_id)

    assert (summary.delivered, summary.ambiguous) == (5, 1)
    assert transport.sent["m02"] == 1
    reasons = {e.message_id: e.reason for _seq, e in harness.ledger.pending_events(100)
               if e.event_type == "failure"}
    assert set(reasons) == {"m02"} and reasons["m02"].startswith("ambiguous_handoff")


def test_each_hostile_request_is_one_reject_beside_delivered_ones(local: LocalDeployment) -> None:
    """Each case in a batch of its own, between two valid requests."""
    harness = make_harness(local)
    inbox = LocalInbox(local.home)
    for n, (body, reason) in enumerate(hostile_cases(local)):
        local.enqueue(local.request(id=f"before-{n}"))
        local.enqueue(body.encode())
        local.enqueue(local.request(id=f"after-{n}"))
        batch_id = inbox.stage(max_items=1000, max_age_seconds=0, now=utcnow())
        assert batch_id is not None

        summary = harness.run(inbox, batch_id)

        case = body[:120]
        assert (summary.delivered, summary.failed) == (2, 0), case
        assert summary.rejected == Counter({reason: 1}), case
        assert not inbox.batches(), case


class DeferringTransport(Transport):
    """A recipients' server that says "try again later" (450) to every recipient, for ever."""

    concurrency = 1

    def __init__(self) -> None:
        self.offered = 0

    def send(self, message: OutgoingMessage) -> HandoffResult:
        self.offered += 1
        result = HandoffResult(None, tuple(
            RecipientOutcome(r, RecipientStatus.FAILED, 450, "4.7.1 greylisted, try later")
            for r in message.recipients))
        raise RecipientsDeferredError("every recipient refused for now", result)


def test_deferred_recipients_are_retried_past_the_attempts_until_the_window_ends(
    local: LocalDeployment,
) -> None:
    """Greylisting asks for minutes: five quick claims are not a reason to give up, so a
    deferred message waits while its request is younger than `recipient_retry_for`, and its
    refusals stand only after that."""
    transport = DeferringTransport()
    harness = make_harness(local, transport)
    now = [utcnow()]
    pipeline = replace(harness.pipeline, clock=lambda: now[0], max_message_attempts=2,
                       recipient_retry_for=timedelta(hours=1), retry_after_seconds=0)
    inbox, batch_id = stage_all(local, 1)

    for _ in range(4):  # attempts 1 to 4, the last two beyond max_message_attempts
        summary = pipeline.process_batch(inbox, batch_id, owner="test|1|0|t")
        assert (summary.deferred, summary.failed) == (1, 0)
        assert inbox.batches() == [batch_id], "the batch waits for the message"
        now[0] += timedelta(minutes=10)
    assert harness.ledger.state_of("lookup-notices", "m00") is MessageState.CLAIMED

    now[0] += timedelta(hours=1)  # the request is now older than the window
    summary = pipeline.process_batch(inbox, batch_id, owner="test|1|0|t")
    assert (summary.deferred, summary.failed) == (0, 1)
    assert harness.ledger.state_of("lookup-notices", "m00") is MessageState.FAILED
    assert transport.offered == 5
    assert not inbox.batches()
