"""One batch, start to finish: parse → authenticate → policy → claim → render → sign → hand off →
record. Plain Python: the Dagster jobs are thin wrappers around `Pipeline.process_batch`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notify_pipeline import defaults
from notify_pipeline.delivery.base import Transport
from notify_pipeline.events import utcnow
from notify_pipeline.faults import crashpoint
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.limits import SendingLimits
from notify_pipeline.policy import Domains, IdentityVerifier
from notify_pipeline.registry import Registry
from notify_pipeline.run.attempt import BatchAttempt
from notify_pipeline.run.decide import Rules
from notify_pipeline.run.render import Renderer, Signer, cpus
from notify_pipeline.run.summary import BatchSummary
from notify_pipeline.warehouse.base import Warehouse

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    registry: Registry
    domains: Domains
    verifier: IdentityVerifier
    ledger: Ledger
    signer_for: Callable[[str], Signer]
    transport: Transport
    lease_seconds: float = defaults.CLAIM_LEASE_SECONDS
    suppress_for: timedelta = timedelta(days=defaults.SUPPRESSION_DAYS)
    max_message_attempts: int = defaults.MAX_MESSAGE_ATTEMPTS
    # Deferred recipients are retried for this long after the request arrived (and for at
    # least `max_message_attempts` claims), so greylisting's minutes are waited out.
    recipient_retry_for: timedelta = timedelta(hours=defaults.RECIPIENT_RETRY_HOURS)
    retry_after_seconds: float = defaults.PROVIDER_RETRY_SECONDS
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    limits: SendingLimits = field(default_factory=SendingLimits)
    clock: Callable[[], datetime] = field(default=utcnow)
    # Processes rendering and signing ahead of the hand-off (CPU-bound: MIME folding, DKIM);
    # None means one per CPU, 0 or 1 renders in the run's process.
    render_processes: int | None = None

    @property
    def rules(self) -> Rules:
        return Rules(self.registry, self.domains, self.verifier, self.max_request_bytes)

    @property
    def renderer(self) -> Renderer:
        processes = cpus() if self.render_processes is None else self.render_processes
        return Renderer(self.signer_for, self.clock, processes)

    def process_batch(self, inbox: Inbox, batch_id: str, *, owner: str) -> BatchSummary:
        """Run one staged batch to completion (or hand its unsent part back for a retry).

        `owner` holds the batch; its messages are claimed by an owner unique to this attempt.
        A process that runs the batch again (a delivery worker) then takes back what an earlier
        attempt released, and waits out what it left claimed, rather than mistaking either for
        a duplicate request within this batch.
        """
        summary = BatchSummary(batch_id=batch_id)
        summary.attempt = self.ledger.acquire_batch(
            batch_id, owner=owner, lease_seconds=self.lease_seconds, now=self.clock()
        )
        if summary.attempt is None:
            log.info("batch %s is held by another live run; skipped", batch_id)
            return summary
        retry_after = self.retry_after_seconds  # kept if the batch fails part-way
        try:
            claimant = f"{owner}#{batch_id}.{summary.attempt}"
            retry_after = BatchAttempt(self, inbox, batch_id, claimant, summary).run()
        finally:
            self.ledger.release_batch(
                batch_id, owner=owner, retry_after_seconds=retry_after, now=self.clock()
            )
        return summary


def flush_events(ledger: Ledger, warehouse: Warehouse, *, chunk: int = 5000) -> int:
    """Move outbox events into the warehouse; safe to repeat (writes are idempotent)."""
    written = 0
    while batch := ledger.pending_events(chunk):
        written += warehouse.write_events([event for _seq, event in batch])
        crashpoint("after_flush")
        ledger.ack_events([seq for seq, _event in batch])
        if len(batch) < chunk:
            break
    return written
