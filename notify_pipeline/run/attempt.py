"""One attempt at one staged batch: decide every request, claim, render, hand off, record.

The attempt owns what every step shares: the owner its claims are held under, the summary it
counts into and the inbox keys that are done. A message's own trouble (a bad request, a refused
recipient, a render error) becomes events and never fails the batch. Only trouble with the
provider connection stops a batch early, and then the unsent messages are handed back for a
later attempt rather than failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from notify_pipeline.delivery.backoff import jittered_backoff
from notify_pipeline.delivery.base import (
    HandoffResult,
    OutgoingMessage,
    RecipientStatus,
    Transport,
)
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    DeferReason,
    FailureReason,
    PermanentDeliveryError,
    RecipientsDeferredError,
    RejectReason,
    RetryableDeliveryError,
)
from notify_pipeline.events import Event
from notify_pipeline.faults import crashpoint
from notify_pipeline.inbox.base import Inbox, InboxItem
from notify_pipeline.ledger.base import Claim, ClaimStatus, Ledger, MessageState, Settlement
from notify_pipeline.limits import SendingLimits, usage_row
from notify_pipeline.message import Envelope
from notify_pipeline.policy import split_suppressed
from notify_pipeline.run.decide import Accepted, Rejected, Rules, decide
from notify_pipeline.run.handoffs import Claimed, Finished, Handoffs
from notify_pipeline.run.outcomes import (
    failure_events,
    handoff_events,
    queued_events,
    reject_events,
)
from notify_pipeline.run.render import Rendered, Renderer, Renderings
from notify_pipeline.run.summary import BatchSummary, timed

log = logging.getLogger(__name__)

RECIPIENT_WAIT_CAP_SECONDS = 3600.0  # the longest a deferred message's batch waits in a row


class Deployment(Protocol):
    """What an attempt uses of its pipeline (`Pipeline` is one)."""

    @property
    def ledger(self) -> Ledger: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def lease_seconds(self) -> float: ...
    @property
    def suppress_for(self) -> timedelta: ...
    @property
    def max_message_attempts(self) -> int: ...
    @property
    def recipient_retry_for(self) -> timedelta: ...
    @property
    def retry_after_seconds(self) -> float: ...
    @property
    def rules(self) -> Rules: ...
    @property
    def renderer(self) -> Renderer: ...
    @property
    def limits(self) -> SendingLimits: ...


@dataclass(frozen=True)
class Unavailable:
    """A hand-off that found the provider unreachable: it waits for a later attempt."""

    job: Claimed
    error: RetryableDeliveryError


@dataclass
class BatchAttempt:
    pipeline: Deployment
    inbox: Inbox
    batch_id: str
    owner: str  # unique to this attempt: see `Pipeline.process_batch`
    summary: BatchSummary
    done: list[str] = field(default_factory=list)  # inbox keys whose outcome is recorded
    waits: list[float] = field(default_factory=list)  # seconds until each deferral may go
    not_before: list[datetime] = field(default_factory=list)  # when quota deferrals may go
    unsettled: list[Settlement] = field(default_factory=list)  # terminal, not yet committed
    rules: Rules = field(init=False)  # fixed for the attempt once `run` has begun

    def run(self) -> float:
        """Run the batch; returns the retry delay for whatever it leaves unfinished."""
        p = self.pipeline
        items = list(self.inbox.read(self.batch_id))
        p.renderer.prestart(len(items))  # workers start while we read and decide
        with p.renderer.renderings(len(items), self.summary) as renderings:
            with timed(self.summary, "decide"):
                decisions = self._decide(items, renderings)
            self.summary.requests = len(decisions)
            self._record_rejects([d for d in decisions if isinstance(d, Rejected)])
            accepted = self._split_suppressed([d for d in decisions if isinstance(d, Accepted)])
            with timed(self.summary, "claim"):
                to_send = self._claim(accepted)
            renderings.keep([job.accepted.item.key for job in to_send])
            crashpoint("after_claim")
            self._deliver(to_send, renderings)
        self.inbox.finish(self.batch_id, self.done)
        now = p.clock()
        waits = [*self.waits, *((t - now).total_seconds() for t in self.not_before)]
        return max(0.0, min(waits, default=0.0))

    def _defer(self, reason: DeferReason, count: int = 1) -> None:
        """Leave `count` items in the batch for a later attempt, after the retry delay."""
        self.summary.defer(reason, count)
        self.waits.append(self.pipeline.retry_after_seconds)

    # deciding and claiming

    def _decide(self, items: list[InboxItem], renderings: Renderings) -> list[Accepted | Rejected]:
        """Decide every request, each accepted one going to be rendered at once: rendering
        touches nothing shared, so it may begin before the claim (what is not claimed is
        dropped), and the workers are not idle while the rest of the batch is decided."""
        self.rules, now = self.pipeline.rules, self.pipeline.clock()
        decisions: list[Accepted | Rejected] = []
        for item in items:
            decision = decide(item, self.rules, now)
            if isinstance(decision, Accepted):
                renderings.add(item.key, decision.envelope)
            decisions.append(decision)
        return decisions

    def _record_rejects(self, rejected: list[Rejected]) -> None:
        if not rejected:
            return
        events = [e for r in rejected for e in r.events]
        self.pipeline.ledger.add_events(events)
        self.summary.events += len(events)
        for r in rejected:
            self.summary.rejected[r.error.reason.value] += 1
            note = f"{r.item.key}: {r.error}"
            log.warning("rejected %s", note)
            request = next((e.message_id for e in r.events if e.message_id), r.item.key)
            self.summary.note_reject(note, reason=r.error.reason.value, request=request)
            self.inbox.quarantine(self.batch_id, r.item.key, r.item.body, str(r.error))
            self.done.append(r.item.key)

    def _split_suppressed(self, accepted: list[Accepted]) -> list[Accepted]:
        """Look the whole batch's recipients up at once, then split each message's."""
        everyone = {r.lower() for a in accepted for r in a.envelope.recipients}
        ledger, now = self.pipeline.ledger, self.pipeline.clock()
        hit = ledger.suppressed(everyone, now=now) if everyone else set()
        return [
            Accepted(a.item, a.envelope, *split_suppressed(a.envelope.recipients, hit))
            for a in accepted
        ]

    def _claim(self, accepted: list[Accepted]) -> list[Claimed]:
        p, now = self.pipeline, self.pipeline.clock()
        claims = [self._claim_for(a, now) for a in accepted]
        results = p.ledger.claim(claims, owner=self.owner, lease_seconds=p.lease_seconds, now=now)
        self._note_limits(claims, now)
        to_send: list[Claimed] = []
        for acc, claim, result in zip(accepted, claims, results, strict=True):
            if result.status is ClaimStatus.CLAIMED:
                self.summary.events += len(claim.queued_events)
                if acc.recipients:
                    to_send.append(Claimed(acc, result.attempts))
                    continue
                self._finish(acc.envelope, MessageState.SUPPRESSED, [])
                self.summary.rejected[RejectReason.SUPPRESSED.value] += 1
            elif result.status is ClaimStatus.AMBIGUOUS:
                self._record_ambiguous(acc)
            elif result.status is ClaimStatus.BUSY:
                self._defer(DeferReason.CLAIMED_ELSEWHERE)
                continue
            elif result.status is ClaimStatus.DEFERRED:
                assert result.deferred_by is not None and result.not_before is not None
                self.summary.defer(result.deferred_by)  # until the quota's window ends
                self.not_before.append(result.not_before)
                continue
            elif result.status is ClaimStatus.DUPLICATE:
                self.summary.duplicates += 1
            self.done.append(acc.item.key)
        return to_send

    def _claim_for(self, acc: Accepted, now: datetime) -> Claim:
        env = acc.envelope
        service = self.rules.registry[env.service]
        quotas = self.pipeline.limits.quotas(service.id, service.limits,
                                             service.advanced.dedicated_ip_pool)
        return Claim(env.service, env.message_id, acc.item.arrival, _queued(acc, now),
                     cost=len(acc.recipients), quotas=quotas)

    def _note_limits(self, claims: list[Claim], now: datetime) -> None:
        """Each quota the batch met, as it stands after the claims (for the run's metadata)."""
        quotas = list(dict.fromkeys(q for c in claims for q in c.quotas))
        if quotas:
            usage = self.pipeline.ledger.quota_usage(quotas, now=now)
            self.summary.limits = [usage_row(u) for u in usage]

    # handing off

    def _deliver(self, to_send: list[Claimed], renderings: Renderings) -> None:
        """Hand each claimed message off; what finds the provider unreachable is handed back.

        Hand-offs begin in claim order, at most `transport.concurrency` at once, each on a
        connection of its own (on threads, or in a process of their own for SMTP); the ledger
        and the summary are touched only here, on this thread. A
        crash therefore leaves at most that many messages `handing_off`, to be recorded as
        ambiguous. When the workers render ahead, the next message is ready at once, so a
        finished hand-off is committed together with the next one's start (one ledger
        transaction per message, not two); until then it too is `handing_off`, so a crash may
        leave twice as many ambiguous, never one sent twice. Rendering and signing, which touch
        no shared state, run ahead of the hand-offs in worker processes for larger batches.
        """
        unavailable: list[Unavailable] = []
        waiting: Sequence[Claimed] = ()
        commit_each = not renderings.pooled  # else with the next one's start
        try:
            with Handoffs(self.pipeline.transport) as handoffs:
                for index, job in enumerate(to_send):
                    outgoing = self._begin(job.accepted, renderings.take(job.accepted.item.key))
                    if outgoing is None:
                        continue
                    with timed(self.summary, "handoff"):
                        finished = handoffs.submit(job, outgoing)
                    unavailable += self._settle_all(finished, commit=commit_each)
                    if unavailable:
                        waiting = to_send[index + 1:]
                        break
                with timed(self.summary, "handoff"):
                    finished = handoffs.drain()
                unavailable += self._settle_all(finished, commit=commit_each)
        finally:
            self._commit()  # what settled, even when the batch stops on an error
        if unavailable:
            self._hand_back([u.job for u in unavailable], waiting, unavailable[0].error)

    def _begin(self, acc: Accepted, rendered: Rendered) -> OutgoingMessage | None:
        """The message to hand off, once the ledger marks it `handing_off`; None when it
        failed to render or another owner took its claim over."""
        env = acc.envelope
        if rendered.data is None:
            log.error("could not render or sign %s/%s:\n%s", env.service, env.message_id,
                      rendered.trace)
            self._fail(acc, FailureReason.RENDER_FAILED)
            self.done.append(acc.item.key)
            return None
        crashpoint("after_sign")
        if not self._commit(begin=(env.service, env.message_id)):
            self._defer(DeferReason.CLAIMED_ELSEWHERE)  # another owner took the claim over
            return None
        pool = self.rules.registry[env.service].advanced.dedicated_ip_pool
        return OutgoingMessage(env.service, env.message_id, env.from_address, acc.recipients,
                               rendered.data, ip_pool=pool)

    def _settle_all(self, finished: list[Finished], *, commit: bool) -> list[Unavailable]:
        """Record finished hand-offs, committed now if `commit`, else by the next `_commit`;
        returns those that found the provider unreachable and should wait for a later
        attempt."""
        unavailable = []
        for done in finished:
            acc = done.job.accepted
            try:
                self._settle(done.job, done.future)
            except RecipientsDeferredError as exc:
                log.warning("%s/%s: %s; it waits for a later attempt", acc.envelope.service,
                            acc.envelope.message_id, exc)
                self._wait_for_recipients(done.job)
                continue
            except RetryableDeliveryError as exc:
                if done.job.attempts < self.pipeline.max_message_attempts:
                    unavailable.append(Unavailable(done.job, exc))
                    continue
                log.error("%s/%s: provider unavailable on its last attempt: %s",
                          acc.envelope.service, acc.envelope.message_id, exc)
                self._fail(acc, FailureReason.PROVIDER_UNAVAILABLE)
            self.done.append(acc.item.key)  # its inbox item goes once `_commit` has run
        if commit:
            self._commit()
        return unavailable

    def _settle(self, job: Claimed, future: Future[HandoffResult]) -> None:
        """Record one hand-off's outcome; re-raises `RetryableDeliveryError`, and
        `RecipientsDeferredError` before the message's last attempt, for the caller."""
        acc = job.accepted
        env, p = acc.envelope, self.pipeline
        try:
            result = future.result()
        except RecipientsDeferredError as exc:
            if self._may_wait_for_recipients(job):
                raise
            result = exc.result  # its last attempt: the refusals stand
        except AmbiguousHandoffError as exc:
            crashpoint("after_handoff")
            log.error("ambiguous hand-off of %s/%s: %s", env.service, env.message_id, exc)
            self._record_ambiguous(acc)
            return
        except PermanentDeliveryError as exc:
            log.error("provider refused %s/%s: %s", env.service, env.message_id, exc)
            self._fail(acc, FailureReason.PROVIDER_REFUSED)
            return
        crashpoint("after_handoff")
        state, events, suppressions = handoff_events(
            env, result, reports_delivery=p.transport.reports_delivery,
            at=p.clock(), suppress_for=p.suppress_for,
        )
        self._finish(env, state, events, provider_message_id=result.provider_message_id,
                     suppressions=suppressions)
        for out in result.outcomes:
            if out.status is RecipientStatus.FAILED:
                log.warning("%s/%s: %s refused after retries: %s %s", env.service,
                            env.message_id, out.recipient, out.code, out.diagnostic)
        statuses = {o.status for o in result.outcomes}
        if state is MessageState.SENT:
            self.summary.delivered += 1
        elif RecipientStatus.BOUNCED in statuses:
            self.summary.bounced += 1
        else:
            self.summary.failed += 1
        self.summary.bounced_recipients += len(suppressions)

    def _may_wait_for_recipients(self, job: Claimed) -> bool:
        """Whether a message whose recipients' server said "later" gets another attempt: while
        it has attempts left, and then while its request is younger than the retry window.
        Counting attempts alone gave up within minutes (five claims, 225-450 s with the
        default back-off), before greylisting's usual delay had passed."""
        p = self.pipeline
        if job.attempts < p.max_message_attempts:
            return True
        return p.clock() - job.accepted.item.received_at < p.recipient_retry_for

    def _wait_for_recipients(self, job: Claimed) -> None:
        """Hand one message back, the rest of the batch going on: its recipients' server asked
        it to come back later. The waits grow with its attempts, as greylisting wants minutes."""
        p = self.pipeline
        self._release([job])
        self.summary.defer(DeferReason.RECIPIENTS_DEFERRED)
        self.waits.append(jittered_backoff(job.attempts, base=p.retry_after_seconds,
                                           cap=RECIPIENT_WAIT_CAP_SECONDS))

    def _hand_back(self, tried: Sequence[Claimed], waiting: Sequence[Claimed],
                   exc: Exception) -> None:
        """Release what found the provider away (`tried`) and what had not been offered to it
        yet (`waiting`), whose attempts count only their own hand-offs."""
        log.warning("provider unavailable (%s); %d message(s) handed back for a retry",
                    exc, len(tried) + len(waiting))
        for jobs, attempted in ((tried, True), (waiting, False)):
            if jobs:
                self._release(jobs, attempted=attempted)
        self._defer(DeferReason.PROVIDER_UNAVAILABLE, len(tried) + len(waiting))

    def _release(self, jobs: Sequence[Claimed], *, attempted: bool = True) -> None:
        self.pipeline.ledger.release(
            [(j.accepted.envelope.service, j.accepted.envelope.message_id) for j in jobs],
            owner=self.owner, attempted=attempted)

    # terminal states

    def _record_ambiguous(self, acc: Accepted) -> None:
        events = failure_events(acc.envelope, acc.recipients, FailureReason.AMBIGUOUS_HANDOFF,
                                self.pipeline.clock())
        self._finish(acc.envelope, MessageState.AMBIGUOUS, events)
        self.summary.ambiguous += 1

    def _fail(self, acc: Accepted, reason: FailureReason) -> None:
        events = failure_events(acc.envelope, acc.recipients, reason, self.pipeline.clock())
        self._finish(acc.envelope, MessageState.FAILED, events)
        self.summary.failed += 1

    def _finish(self, env: Envelope, state: MessageState, events: list[Event],
                **extra: Any) -> None:
        """Settle a message; it is recorded by the next `_commit`."""
        self.unsettled.append(Settlement(env.service, env.message_id, state, events, **extra))

    def _commit(self, begin: tuple[str, str] | None = None) -> bool:
        """Record every unsettled message and begin the hand-off of `begin`, in one ledger
        transaction; returns whether that hand-off began (True when none was asked for)."""
        if not self.unsettled and begin is None:
            return True
        settling, self.unsettled = self.unsettled, []
        with timed(self.summary, "record"):
            settled = self.pipeline.ledger.settle(settling, owner=self.owner, begin=begin)
        for settlement, recorded in zip(settling, settled.recorded, strict=True):
            if recorded:
                self.summary.events += len(settlement.events)
                crashpoint("after_record")
        return settled.begun is not False


def _queued(acc: Accepted, now: datetime) -> tuple[Event, ...]:
    """The events a claim records once made: queued, and a reject per suppressed recipient."""
    env = acc.envelope
    events = queued_events(env, acc.recipients, now)
    if acc.suppressed:
        events += tuple(
            reject_events(
                inbox_key=acc.item.arrival, service=env.service, message_id=env.message_id,
                recipients=acc.suppressed, reason=RejectReason.SUPPRESSED,
                subject=env.subject, tags=env.tags, at=now,
            )
        )
    return events
