"""`retry_batches`: deferred batches become ready at once; a live run's batch is left alone."""

from __future__ import annotations

from notify_pipeline.events import utcnow
from notify_pipeline.inbox.local import LocalInbox
from notify_pipeline.ledger.base import current_owner
from notify_pipeline.ledger.sqlite import SqliteLedger
from notify_pipeline.run.retry import RetryOutcome, retry_batches


def test_deferred_ready_and_held_batches(local):
    for n in range(3):
        local.enqueue(local.request(id=f"m{n}"))
    inbox = LocalInbox(local.home)
    inbox.stage(max_items=1, max_age_seconds=0, now=utcnow())
    inbox.stage(max_items=1, max_age_seconds=0, now=utcnow())
    deferred, held = inbox.batches()
    ledger = SqliteLedger(local.settings.ledger_path)
    try:
        earlier = current_owner("earlier")
        ledger.acquire_batch(deferred, owner=earlier, lease_seconds=60, now=utcnow())
        ledger.release_batch(deferred, owner=earlier, retry_after_seconds=3600, now=utcnow())
        ledger.acquire_batch(held, owner=current_owner("live"), lease_seconds=600, now=utcnow())
        results = {r.batch_id: r for r in retry_batches(inbox, ledger)}
        assert results[deferred].outcome is RetryOutcome.READY
        assert results[held].outcome is RetryOutcome.HELD
        assert ledger.batch_status(deferred, now=utcnow()).ready
        assert not ledger.batch_status(held, now=utcnow()).ready, "a live lease is never taken"
    finally:
        ledger.close()
