"""Sending limits in a batch: over-limit requests wait in their batch, counted as `deferred`, and
go when their window allows; each exactly once.

The local profile's real ledger, inbox, registry, identity tokens and DKIM keys; a recording
transport instead of a provider; the pipeline's clock moved forward instead of waiting.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from notify_pipeline.events import utcnow
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.limits import SendingLimits, ServiceLimits
from notify_pipeline.registry import AdvancedOptions, Registry
from notify_pipeline.run.report import batch_line, limits_table, outcome_table
from tests.conftest import LocalDeployment
from tests.helpers import Harness, RecordingTransport, make_harness


def staged(local: LocalDeployment, count: int, *, recipients: int = 1) -> tuple[LocalInbox, str]:
    for n in range(count):
        to = [f"r{i}@example.org" for i in range(recipients)]
        local.enqueue(local.request(id=f"m{n:02d}", subject=f"m{n:02d}", to=to))
    inbox = LocalInbox(local.home)
    batch_id = inbox.stage(max_items=1000, max_age_seconds=0, now=utcnow())
    assert batch_id is not None
    return inbox, batch_id


def with_service(harness: Harness, **changes: object) -> None:
    """The registry with `lookup-notices` changed (what a registry file would say)."""
    registry = harness.pipeline.registry
    harness.pipeline.registry = Registry(
        s.model_copy(update=changes) if s.id == "lookup-notices" else s
        for s in registry.services)


def sent_ids(harness: Harness) -> Counter[str]:
    transport = harness.transport
    assert isinstance(transport, RecordingTransport)
    return Counter(m.message_id for m in transport.sent)


def test_over_the_daily_default_requests_wait_in_their_batch_and_go_the_next_day(
    local: LocalDeployment,
) -> None:
    harness = make_harness(local)
    harness.pipeline.limits = SendingLimits(per_day=3)
    inbox, batch_id = staged(local, 5)

    first = harness.run(inbox, batch_id)

    assert (first.delivered, first.deferred) == (3, 2)
    assert first.deferred_by == Counter({"per_day": 2})
    assert len(list(inbox.read(batch_id))) == 2, "the deferred requests stay in the batch"
    [row] = first.limits
    midnight = datetime.fromisoformat(row["window_start"]) + timedelta(days=1)
    status = harness.ledger.batch_status
    assert not status(batch_id, now=midnight - timedelta(seconds=1)).ready
    assert status(batch_id, now=midnight + timedelta(seconds=1)).ready, "ready once the day ends"
    assert (row["scope"], row["limit"], row["used"], row["cap"]) == (
        "service:lookup-notices", "per_day", 3, 3)
    assert "2 deferred (per_day 2)" in batch_line(first)
    assert "| deferred: per_day | 2 |" in outcome_table(first)
    assert "| `service:lookup-notices` | per_day |" in limits_table(first.limits)
    queued = [e for _seq, e in harness.ledger.pending_events(100) if e.event_type == "queued"]
    assert len(queued) == 3, "a deferred request has no event yet"

    harness.pipeline.clock = lambda: midnight + timedelta(seconds=1)
    second = harness.run(inbox, batch_id)

    assert (second.delivered, second.deferred) == (2, 0)
    assert sent_ids(harness) == Counter({f"m{n:02d}": 1 for n in range(5)})
    assert not inbox.batches()


def test_a_services_own_limit_counts_recipients_and_beats_the_default(
    local: LocalDeployment,
) -> None:
    harness = make_harness(local)
    harness.pipeline.limits = SendingLimits(per_minute=100)
    with_service(harness, limits=ServiceLimits(per_minute=4))
    inbox, batch_id = staged(local, 3, recipients=2)

    summary = harness.run(inbox, batch_id)

    assert (summary.delivered, summary.deferred) == (2, 1), "two messages of two recipients"
    assert summary.deferred_by == Counter({"per_minute": 1})
    assert sent_ids(harness) == Counter({"m00": 1, "m01": 1})


def test_a_pools_warm_up_caps_its_day_and_its_messages_carry_the_pool(
    local: LocalDeployment,
) -> None:
    harness = make_harness(local)
    harness.pipeline.limits = SendingLimits(warmup=(2, 4))
    with_service(harness, advanced=AdvancedOptions(dedicated_ip_pool="transactional"))
    inbox, batch_id = staged(local, 3)

    summary = harness.run(inbox, batch_id)

    assert (summary.delivered, summary.deferred_by) == (2, Counter({"warmup": 1}))
    transport = harness.transport
    assert isinstance(transport, RecordingTransport)
    assert {m.ip_pool for m in transport.sent} == {"transactional"}
    [row] = summary.limits
    assert (row["scope"], row["warmup_day"], row["used"], row["cap"]) == (
        "pool:transactional", 1, 2, 2)

    tomorrow = utcnow() + timedelta(days=1)
    harness.pipeline.clock = lambda: tomorrow
    assert harness.run(inbox, batch_id).delivered == 1
    assert sent_ids(harness) == Counter({"m00": 1, "m01": 1, "m02": 1})


def test_a_duplicate_of_a_deferred_request_is_delivered_once(local: LocalDeployment) -> None:
    harness = make_harness(local)
    harness.pipeline.limits = SendingLimits(per_day=1)
    inbox, batch_id = staged(local, 2)
    harness.run(inbox, batch_id)
    local.enqueue(local.request(id="m01", subject="m01"))  # the client sends m01 again
    again = inbox.stage(max_items=1000, max_age_seconds=0, now=utcnow())
    assert again is not None

    assert harness.run(inbox, again).deferred == 1, "the copy waits too"
    tomorrow = utcnow() + timedelta(days=1)
    harness.pipeline.clock = lambda: tomorrow
    results = [harness.run(inbox, b) for b in (batch_id, again)]

    assert [(r.delivered, r.duplicates) for r in results] == [(1, 0), (0, 1)]
    assert sent_ids(harness) == Counter({"m00": 1, "m01": 1})
    assert not inbox.batches()
