"""`notify retry`: make deferred or stuck batches ready to run now.

A batch handed back for a retry waits out its delay (`provider_retry_seconds`); a batch whose
run request was used up without the run ever taking it (it failed to start, say) would wait
for ever, because the same attempt always gets the same run key. Retrying takes the batch's
lease for an instant and hands it straight back with no delay: the attempt count moves on (a
fresh run key for the inbox sensor) and the batch is ready at once. A batch a live run holds is
left alone; its messages stay under the ledger's exactly-once rules either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from notify_pipeline.events import utcnow
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.ledger.base import Ledger, current_owner


class RetryOutcome(StrEnum):
    READY = "ready"  # ready to run now
    HELD = "held"  # a live run holds it: left alone
    NOT_STAGED = "not_staged"  # no such staged batch (finished, or never staged)


@dataclass(frozen=True)
class Retried:
    batch_id: str
    outcome: RetryOutcome
    attempts: int  # times it has been taken so far, the retry's own instant included

    def __str__(self) -> str:
        words = {
            RetryOutcome.READY: f"ready now (attempt {self.attempts + 1} is next)",
            RetryOutcome.HELD: "held by a live run; left alone",
            RetryOutcome.NOT_STAGED: "no such staged batch",
        }
        return f"{self.batch_id}: {words[self.outcome]}"


def retry_batches(inbox: Inbox, ledger: Ledger, batch_ids: Sequence[str] = ()) -> list[Retried]:
    """Make the named staged batches (default: every staged one) ready now."""
    staged = inbox.batches()
    owner = current_owner("notify-retry")
    results = []
    for batch_id in batch_ids or staged:
        if batch_id not in staged:
            results.append(Retried(batch_id, RetryOutcome.NOT_STAGED, 0))
            continue
        now = utcnow()
        attempt = ledger.acquire_batch(batch_id, owner=owner, lease_seconds=0.0, now=now)
        if attempt is None:
            held = ledger.batch_status(batch_id, now=now).attempts
            results.append(Retried(batch_id, RetryOutcome.HELD, held))
            continue
        ledger.release_batch(batch_id, owner=owner, retry_after_seconds=0.0, now=now)
        results.append(Retried(batch_id, RetryOutcome.READY, attempt))
    return results
