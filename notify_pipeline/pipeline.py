"""One batch, start to finish: parse → authenticate → policy → claim → render → sign → hand off →
record. Plain Python: the Dagster job is a thin wrapper around `Pipeline.process_batch`.

A message's own trouble (a bad request, a refused recipient, a render error) becomes events and
never fails the batch. Only trouble with the provider connection stops a batch early, and then
the unsent messages are handed back for a later attempt rather than failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from notify_pipeline import mime
from notify_pipeline.delivery.base import (
    HandoffResult,
    OutgoingMessage,
    RecipientStatus,
    Transport,
)
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    PermanentDeliveryError,
    RejectReason,
    RequestRejected,
    RetryableDeliveryError,
)
from notify_pipeline.events import Event, utcnow
from notify_pipeline.faults import crashpoint
from notify_pipeline.inbox.base import Inbox, InboxItem
from notify_pipeline.ledger.base import Claim, ClaimStatus, Ledger, MessageState
from notify_pipeline.message import Envelope
from notify_pipeline.outcomes import (
    AMBIGUOUS_REASON,
    failure_events,
    handoff_events,
    queued_events,
    reject_events,
)
from notify_pipeline.policy import (
    Domains,
    IdentityVerifier,
    authorise,
    build_envelope,
    split_suppressed,
)
from notify_pipeline.registry import Registry
from notify_pipeline.request import parse_request, peek_attribution, peek_recipients
from notify_pipeline.warehouse.base import Warehouse

log = logging.getLogger(__name__)


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class _Accepted:
    item: InboxItem
    envelope: Envelope
    recipients: tuple[str, ...] = ()  # after suppression
    suppressed: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Rejected:
    item: InboxItem
    error: RequestRejected
    events: list[Event]


@dataclass(frozen=True)
class _Rendered:
    """A message rendered and signed (`data`), or why it could not be (`error`, `trace`)."""

    data: bytes | None
    error: str | None = None
    trace: str | None = None
    render_seconds: float = 0.0
    sign_seconds: float = 0.0


# Below this many messages a batch is rendered in the run's own process, one message just before
# its hand-off: starting workers (a fork each, then a ~40 ms DKIM key parse each) would cost more.
POOL_MIN_MESSAGES = 32


@dataclass
class BatchSummary:
    """Counts by outcome, for run metadata and the `notify process` summary."""

    batch_id: str
    attempt: int | None = None
    requests: int = 0
    delivered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    bounced: int = 0
    failed: int = 0
    ambiguous: int = 0
    duplicates: int = 0
    deferred: int = 0
    bounced_recipients: int = 0
    suppressed_recipients: int = 0
    events: int = 0
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    reject_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "attempt": self.attempt,
            "requests": self.requests,
            "delivered": self.delivered,
            "rejected": dict(sorted(self.rejected.items())),
            "bounced": self.bounced,
            "failed": self.failed,
            "ambiguous": self.ambiguous,
            "duplicates": self.duplicates,
            "deferred": self.deferred,
            "bounced_recipients": self.bounced_recipients,
            "suppressed_recipients": self.suppressed_recipients,
            "events": self.events,
            "stage_seconds": {k: round(v, 4) for k, v in sorted(self.stage_seconds.items())},
        }


@dataclass
class Pipeline:
    registry: Registry
    domains: Domains
    verifier: IdentityVerifier
    ledger: Ledger
    signer_for: Callable[[str], Signer]
    transport: Transport
    lease_seconds: float = 300.0
    suppress_for: timedelta = timedelta(days=90)
    max_message_attempts: int = 5
    retry_after_seconds: float = 30.0
    max_request_bytes: int = 10 * 1024 * 1024
    clock: Callable[[], datetime] = utcnow
    # Processes rendering and signing ahead of the hand-off (CPU-bound: MIME folding, DKIM);
    # None means one per CPU, 0 or 1 renders in the run's process.
    render_processes: int | None = None

    def process_batch(self, inbox: Inbox, batch_id: str, *, owner: str) -> BatchSummary:
        """Run one staged batch to completion (or hand its unsent part back for a retry).

        `owner` holds the batch; its messages are claimed by an owner unique to this attempt.
        A process that runs the batch again (a delivery worker) then takes back what an earlier
        attempt released, and waits out what it left claimed, rather than mistaking either for
        a duplicate request within this batch.
        """
        summary = BatchSummary(batch_id)
        summary.attempt = self.ledger.acquire_batch(
            batch_id, owner=owner, lease_seconds=self.lease_seconds, now=self.clock()
        )
        if summary.attempt is None:
            log.info("batch %s is held by another live run; skipped", batch_id)
            return summary
        retry_after = self.retry_after_seconds  # kept if the batch fails part-way
        try:
            claimant = f"{owner}#{batch_id}.{summary.attempt}"
            retry_after = self._process(inbox, batch_id, claimant, summary)
        finally:
            self.ledger.release_batch(
                batch_id, owner=owner, retry_after_seconds=retry_after, now=self.clock()
            )
        return summary

    def _process(self, inbox: Inbox, batch_id: str, owner: str, summary: BatchSummary) -> float:
        items = list(inbox.read(batch_id))
        if len(items) >= POOL_MIN_MESSAGES:
            _RenderPool.prestart(self._render_processes)  # workers start while we decide
        with _timed(summary, "decide"):
            decisions = [self._decide(item) for item in items]
        summary.requests = len(decisions)
        rejected = [d for d in decisions if isinstance(d, _Rejected)]
        self._record_rejects(inbox, batch_id, rejected, summary)
        accepted = self._split_suppressed([d for d in decisions if isinstance(d, _Accepted)])
        done_keys = [r.item.key for r in rejected]
        with _timed(summary, "claim"):
            to_send = self._claim(accepted, owner, summary, done_keys)
        crashpoint("after_claim")
        retry_after = self._deliver(to_send, owner, summary, done_keys)
        inbox.finish(batch_id, done_keys)
        if summary.deferred and not retry_after:
            retry_after = self.retry_after_seconds  # items wait on another run's live claim
        return retry_after

    def _decide(self, item: InboxItem) -> _Accepted | _Rejected:
        try:
            request = parse_request(item.body, max_bytes=self.max_request_bytes)
        except RequestRejected as exc:
            service, message_id = peek_attribution(item.body)
            return self._reject(item, exc, service, message_id, peek_recipients(item.body))
        try:
            service_def = authorise(
                request, registry=self.registry, verifier=self.verifier,
                received_at=item.received_at,
            )
            envelope = build_envelope(request, service_def, self.domains)
        except RequestRejected as exc:
            return self._reject(
                item, exc, request.service, request.id, request.recipients,
                request.subject, request.tags,
            )
        return _Accepted(item, envelope)

    def _reject(
        self,
        item: InboxItem,
        exc: RequestRejected,
        service: str | None,
        message_id: str | None,
        recipients: Sequence[str],
        subject: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> _Rejected:
        events = reject_events(
            inbox_key=item.key, service=service, message_id=message_id,
            recipients=recipients, reason=exc.reason.value, subject=subject,
            tags=tags or {}, at=self.clock(),
        )
        return _Rejected(item, exc, events)

    def _record_rejects(
        self, inbox: Inbox, batch_id: str, rejected: list[_Rejected], summary: BatchSummary
    ) -> None:
        if not rejected:
            return
        events = [e for r in rejected for e in r.events]
        self.ledger.add_events(events)
        summary.events += len(events)
        for r in rejected:
            summary.rejected[r.error.reason.value] += 1
            note = f"{r.item.key}: {r.error}"
            log.warning("rejected %s", note)
            if len(summary.reject_examples) < 20:
                summary.reject_examples.append(note)
            inbox.quarantine(batch_id, r.item.key, r.item.body, str(r.error))

    def _split_suppressed(self, accepted: list[_Accepted]) -> list[_Accepted]:
        """Look the whole batch's recipients up at once, then split each message's."""
        everyone = {r.lower() for a in accepted for r in a.envelope.recipients}
        hit = self.ledger.suppressed(everyone, now=self.clock()) if everyone else set()
        return [
            _Accepted(a.item, a.envelope, *split_suppressed(a.envelope.recipients, hit))
            for a in accepted
        ]

    def _claim(
        self, accepted: list[_Accepted], owner: str, summary: BatchSummary, done: list[str]
    ) -> list[tuple[_Accepted, int]]:
        now = self.clock()
        claims = [self._claim_for(a, now) for a in accepted]
        results = self.ledger.claim(
            claims, owner=owner, lease_seconds=self.lease_seconds, now=now
        )
        to_send: list[tuple[_Accepted, int]] = []
        for acc, claim, result in zip(accepted, claims, results, strict=True):
            if result.status is ClaimStatus.CLAIMED:
                summary.events += len(claim.queued_events)
                if acc.recipients:
                    to_send.append((acc, result.attempts))
                    continue
                self._finish(acc.envelope, owner, MessageState.SUPPRESSED, [], summary)
                summary.rejected[RejectReason.SUPPRESSED.value] += 1
            elif result.status is ClaimStatus.AMBIGUOUS:
                self._record_ambiguous(acc, owner, summary)
            elif result.status is ClaimStatus.BUSY:
                summary.deferred += 1
                continue
            elif result.status is ClaimStatus.DUPLICATE:
                summary.duplicates += 1
            done.append(acc.item.key)
        return to_send

    def _claim_for(self, acc: _Accepted, now: datetime) -> Claim:
        env = acc.envelope
        events = queued_events(env, acc.recipients, now)
        if acc.suppressed:
            events += tuple(
                reject_events(
                    inbox_key=acc.item.key, service=env.service, message_id=env.message_id,
                    recipients=acc.suppressed, reason=RejectReason.SUPPRESSED.value,
                    subject=env.subject, tags=env.tags, at=now,
                )
            )
        return Claim(env.service, env.message_id, acc.item.key, events)

    def _record_ambiguous(self, acc: _Accepted, owner: str, summary: BatchSummary) -> None:
        events = failure_events(acc.envelope, acc.recipients, AMBIGUOUS_REASON, self.clock())
        self._finish(acc.envelope, owner, MessageState.AMBIGUOUS, events, summary)
        summary.ambiguous += 1

    def _finish(
        self, env: Envelope, owner: str, state: MessageState, events: list[Event],
        summary: BatchSummary, **extra: Any,
    ) -> None:
        with _timed(summary, "record"):
            if self.ledger.finish(
                env.service, env.message_id, owner=owner, state=state, events=events, **extra
            ):
                summary.events += len(events)

    def _deliver(
        self, to_send: list[tuple[_Accepted, int]], owner: str, summary: BatchSummary,
        done: list[str],
    ) -> float:
        """Hand each claimed message off; returns a retry delay if the provider was unreachable.

        Hand-offs begin in claim order, at most `transport.concurrency` at once, each on a
        thread of its own; the ledger and the summary are touched only here, on this thread. A
        crash therefore leaves at most that many messages `handing_off`, to be recorded as
        ambiguous. Rendering and signing, which touch no shared state, run ahead of the
        hand-offs in worker processes for larger batches.
        """
        unavailable: list[tuple[tuple[_Accepted, int], RetryableDeliveryError]] = []
        waiting: Sequence[tuple[_Accepted, int]] = ()
        with self._renderings([acc for acc, _ in to_send], summary) as renderings, \
                _Handoffs(self.transport) as handoffs:
            for index, (job, rendered) in enumerate(zip(to_send, renderings, strict=True)):
                outgoing = self._begin(job[0], rendered, owner, summary, done)
                if outgoing is None:
                    continue
                with _timed(summary, "handoff"):
                    finished = handoffs.submit(job, outgoing)
                unavailable += self._settle_all(finished, owner, summary, done)
                if unavailable:
                    waiting = to_send[index + 1:]
                    break
            with _timed(summary, "handoff"):
                finished = handoffs.drain()
            unavailable += self._settle_all(finished, owner, summary, done)
        if not unavailable:
            return 0.0
        self._hand_back([job for job, _ in unavailable] + list(waiting), owner, summary,
                        unavailable[0][1])
        return self.retry_after_seconds

    def _begin(
        self, acc: _Accepted, rendered: _Rendered, owner: str, summary: BatchSummary,
        done: list[str],
    ) -> OutgoingMessage | None:
        """The message to hand off, once the ledger marks it `handing_off`; None when it
        failed to render or another owner took its claim over."""
        outgoing = self._outgoing(acc, rendered, owner, summary)
        if outgoing is None:
            done.append(acc.item.key)
            return None
        crashpoint("after_sign")
        if not self.ledger.begin_handoff(acc.envelope.service, acc.envelope.message_id,
                                         owner=owner):
            summary.deferred += 1  # another owner took the claim over; its run finishes it
            return None
        return outgoing

    def _settle_all(
        self, finished: list[tuple[tuple[_Accepted, int], Future[HandoffResult]]], owner: str,
        summary: BatchSummary, done: list[str],
    ) -> list[tuple[tuple[_Accepted, int], RetryableDeliveryError]]:
        """Record finished hand-offs; returns those that found the provider unreachable and
        should wait for a later attempt, with the error."""
        unavailable = []
        for (acc, attempts), future in finished:
            try:
                self._settle(acc, future, owner, summary)
            except RetryableDeliveryError as exc:
                if attempts < self.max_message_attempts:
                    unavailable.append(((acc, attempts), exc))
                    continue
                self._fail(acc, owner, summary, f"provider_unavailable: {exc}")
            crashpoint("after_record")
            done.append(acc.item.key)
        return unavailable

    @property
    def _render_processes(self) -> int:
        if self.render_processes is not None:
            return self.render_processes
        if hasattr(os, "sched_getaffinity"):  # the CPUs this process may use (Linux)
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1

    @contextmanager
    def _renderings(
        self, accepted: Sequence[_Accepted], summary: BatchSummary
    ) -> Iterator[Iterator[_Rendered]]:
        """Every message rendered and signed, in order: by the process's worker pool when the
        batch is large enough, else each one here just before its hand-off."""
        tasks = [self._task(acc) for acc in accepted]
        work = [task for task in tasks if not isinstance(task, _Rendered)]
        if self._render_processes < 2 or len(work) < POOL_MIN_MESSAGES:
            yield _with_stage_times(
                (task if isinstance(task, _Rendered) else _render_task(*task) for task in tasks),
                summary, waited=False,
            )
            return
        chunk = max(1, min(16, len(work) // (4 * self._render_processes)))
        with _RenderPool.map(self._render_processes, work, chunk) as results:
            yield _with_stage_times(
                (task if isinstance(task, _Rendered) else next(results) for task in tasks),
                summary, waited=True,
            )

    def _task(self, acc: _Accepted) -> tuple[Envelope, datetime, Signer] | _Rendered:
        """What a worker needs to render and sign `acc`, or the failure to find its signer."""
        env = acc.envelope
        try:
            return env, self.clock(), self.signer_for(env.domain)
        except Exception as exc:  # e.g. an unreadable key: this message fails, not the batch
            return _Rendered(None, type(exc).__name__, traceback.format_exc())

    def _outgoing(
        self, acc: _Accepted, rendered: _Rendered, owner: str, summary: BatchSummary
    ) -> OutgoingMessage | None:
        env = acc.envelope
        if rendered.data is None:
            log.error("could not render or sign %s/%s:\n%s", env.service, env.message_id,
                      rendered.trace)
            self._fail(acc, owner, summary, f"render_failed: {rendered.error}")
            return None
        return OutgoingMessage(env.service, env.message_id, env.from_address, acc.recipients,
                               rendered.data)

    def _settle(
        self, acc: _Accepted, future: Future[HandoffResult], owner: str, summary: BatchSummary
    ) -> None:
        """Record one hand-off's outcome; re-raises `RetryableDeliveryError` for the caller."""
        env = acc.envelope
        try:
            result = future.result()
        except AmbiguousHandoffError as exc:
            crashpoint("after_handoff")
            log.error("ambiguous hand-off of %s/%s: %s", env.service, env.message_id, exc)
            self._record_ambiguous(acc, owner, summary)
            return
        except PermanentDeliveryError as exc:
            self._fail(acc, owner, summary, f"provider_refused: {exc}")
            return
        crashpoint("after_handoff")
        state, events, suppressions = handoff_events(
            env, result, reports_delivery=self.transport.reports_delivery,
            at=self.clock(), suppress_for=self.suppress_for,
        )
        self._finish(env, owner, state, events, summary,
                     provider_message_id=result.provider_message_id, suppressions=suppressions)
        statuses = {o.status for o in result.outcomes}
        if state is MessageState.SENT:
            summary.delivered += 1
        elif RecipientStatus.BOUNCED in statuses:
            summary.bounced += 1
        else:
            summary.failed += 1
        summary.bounced_recipients += len(suppressions)

    def _fail(self, acc: _Accepted, owner: str, summary: BatchSummary, reason: str) -> None:
        events = failure_events(acc.envelope, acc.recipients, reason, self.clock())
        self._finish(acc.envelope, owner, MessageState.FAILED, events, summary)
        summary.failed += 1

    def _hand_back(
        self, rest: Sequence[tuple[_Accepted, int]], owner: str, summary: BatchSummary,
        exc: Exception,
    ) -> None:
        log.warning("provider unavailable (%s); %d message(s) handed back for a retry",
                    exc, len(rest))
        self.ledger.release(
            [(a.envelope.service, a.envelope.message_id) for a, _ in rest], owner=owner
        )
        summary.deferred += len(rest)


class _Handoffs:
    """Hand-offs under way: up to `transport.concurrency` at once, each on a thread of its own.

    `submit` starts one and, once all are busy, waits for at least one to finish; finished
    hand-offs come back to the caller's thread, which alone records them. With a concurrency of
    one the send runs right here, on the caller's thread.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._width = max(1, transport.concurrency)
        self._threads = (ThreadPoolExecutor(self._width, thread_name_prefix="handoff")
                         if self._width > 1 else None)
        self._running: dict[Future[HandoffResult], tuple[_Accepted, int]] = {}

    def __enter__(self) -> _Handoffs:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)  # sends under way end (bounded by their timeout)

    def submit(
        self, job: tuple[_Accepted, int], outgoing: OutgoingMessage
    ) -> list[tuple[tuple[_Accepted, int], Future[HandoffResult]]]:
        if self._threads is None:
            future: Future[HandoffResult] = Future()
            try:
                future.set_result(self._transport.send(outgoing))
            except Exception as exc:  # delivered to the caller by `future.result()`
                future.set_exception(exc)
            return [(job, future)]
        self._running[self._threads.submit(self._transport.send, outgoing)] = job
        if len(self._running) < self._width:
            return []
        finished, _ = wait(self._running, return_when=FIRST_COMPLETED)
        return [(self._running.pop(future), future) for future in finished]

    def drain(self) -> list[tuple[tuple[_Accepted, int], Future[HandoffResult]]]:
        """Wait for every hand-off under way."""
        wait(self._running)
        finished, self._running = list(self._running.items()), {}
        return [(job, future) for future, job in finished]


class _RenderPool:
    """The process's render-and-sign workers, started once and kept for later batches.

    Starting them costs a forkserver (first time), a fork, and a DKIM key parse per worker,
    about half a second on a busy 2-core machine: too much to pay for every batch when one
    process runs many (`notify process`). Workers come from a forkserver, never a fork of this
    (threaded) process, and exit when this process dies; Python shuts the pool down at exit.
    """

    _lock = threading.Lock()
    _pool: ProcessPoolExecutor | None = None
    _key: tuple[int, int] | None = None  # (our pid, size): a forked child must not reuse it

    @classmethod
    def prestart(cls, processes: int) -> None:
        if processes >= 2:
            cls._get(processes).submit(os.getpid)

    @classmethod
    @contextmanager
    def map(
        cls, processes: int, work: Sequence[tuple[Envelope, datetime, Signer]], chunk: int
    ) -> Iterator[Iterator[_Rendered]]:
        """Results in order; whatever is still queued is cancelled when the block ends."""
        # `Executor.map` returns a generator; closing it cancels the futures not yet started.
        results = cast(Generator[_Rendered, None, None], cls._get(processes).map(
            _render_task, *zip(*work, strict=True), chunksize=chunk))
        try:
            yield results
        except BrokenProcessPool:
            cls._discard()  # a worker died: the next batch gets a fresh pool
            raise
        finally:
            results.close()  # e.g. the provider went away and the rest is handed back

    @classmethod
    def _get(cls, processes: int) -> ProcessPoolExecutor:
        with cls._lock:
            key = (os.getpid(), processes)
            if cls._pool is None or cls._key != key:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["notify_pipeline.mime",
                                                "notify_pipeline.signing"])
                cls._pool = ProcessPoolExecutor(processes, mp_context=context,
                                                initializer=_exit_with_owner,
                                                initargs=(os.getpid(),))
                cls._key = key
            return cls._pool

    @classmethod
    def _discard(cls) -> None:
        with cls._lock:
            pool, cls._pool, cls._key = cls._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _render_task(env: Envelope, date: datetime, signer: Signer) -> _Rendered:
    """Render and sign one message. Never raises: one bad message must not stop the batch."""
    start = time.perf_counter()
    try:
        raw = mime.render(env, date=date, message_id_header=mime.make_message_id_header(
            env.service, env.message_id, env.domain))
        rendered = time.perf_counter()
        signed = signer.sign(raw)
    except Exception as exc:
        return _Rendered(None, type(exc).__name__, traceback.format_exc())
    return _Rendered(signed, render_seconds=rendered - start,
                     sign_seconds=time.perf_counter() - rendered)


def _with_stage_times(
    results: Iterable[_Rendered], summary: BatchSummary, *, waited: bool
) -> Iterator[_Rendered]:
    """Pass results through, adding their render and sign times to the summary, and the time
    spent waiting for the workers as `render_wait` when `waited`."""
    iterator = iter(results)
    while True:
        start = time.perf_counter()
        rendered = next(iterator, None)
        if waited:
            summary.stage_seconds["render_wait"] += time.perf_counter() - start
        if rendered is None:
            return
        summary.stage_seconds["render"] += rendered.render_seconds
        summary.stage_seconds["sign"] += rendered.sign_seconds
        yield rendered


def _exit_with_owner(owner: int) -> None:
    """Runs in each worker: exit as soon as the process that owns the pool is gone.

    A forkserver child cannot wait for its parent instead: every worker holds the fd that
    would tell the forkserver its client died, so after a SIGKILL neither would ever leave,
    and a caller reading the run's output would wait for them forever. A pidfd (Linux 5.3+)
    becomes readable when the owner exits, zombie or not; elsewhere we poll once a second.
    """

    def watch() -> None:
        try:
            descriptor = os.pidfd_open(owner)
        except (AttributeError, OSError):  # no pidfds here: poll
            while _alive(owner):
                time.sleep(1.0)
        else:
            select.select([descriptor], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


@contextmanager
def _timed(summary: BatchSummary, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        summary.stage_seconds[stage] += time.perf_counter() - start
