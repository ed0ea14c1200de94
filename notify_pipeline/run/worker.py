"""The delivery worker loop: one long-lived owner that stages the inbox and runs every ready batch.

A run per batch pays a sensor tick and a fresh interpreter before its first hand-off; a worker that
is already running pays neither, which is what keeps light-load latency under a second. It does
exactly what a `deliver_batch` run does per batch (`Pipeline.process_batch`, then
`flush_events`), so exactly-once stays the ledger's: a batch is taken under its lease, and a batch
held by another owner (a `deliver_batch` run, a second worker) is skipped. Plain Python, so it can
be tested, and run, without Dagster.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime

from notify_pipeline.events import utcnow
from notify_pipeline.faults import crashpoint
from notify_pipeline.inbox.base import Inbox
from notify_pipeline.ledger.base import Ledger
from notify_pipeline.registry import Registry
from notify_pipeline.run.pipeline import Pipeline, flush_events
from notify_pipeline.run.summary import BatchSummary, Totals
from notify_pipeline.warehouse.base import Warehouse

log = logging.getLogger(__name__)

# Bounds one staging pass, so a flood of requests cannot keep a sensor tick (or the worker) from
# running what it staged.
MAX_BATCHES_PER_PASS = 20
# The longest pause after passes that keep failing (e.g. the ledger is unreachable).
MAX_FAILURE_PAUSE_SECONDS = 30.0
# How long a worker's staging turn holds if it dies while staging (see `staging_turn`).
STAGING_TURN_SECONDS = 60.0


def staging_turn(now: datetime) -> str:
    """The ledger lease that gives one worker at a time, in whatever process or pod, the turn to
    stage. Two stagers could list and copy the same waiting requests (the ledger would still
    deliver each once, but every copy costs a transfer, a claim and a retry delay). Named by
    UTC day, so the lease's take counter stays small; at midnight two may stage for one pass.
    """
    return f"staging-turn.{now:%Y%m%d}"

def stage_batches(inbox: Inbox, *, max_items: int, max_age_seconds: float) -> list[str]:
    """Stage as many full (or old enough) batches as are waiting, up to a per-pass bound."""
    staged: list[str] = []
    for batch_id in inbox.stage_many(max_items=max_items, max_age_seconds=max_age_seconds,
                                     now=utcnow(), max_batches=MAX_BATCHES_PER_PASS):
        staged.append(batch_id)
        crashpoint("after_stage")
    return staged


def ready_batches(inbox: Inbox, ledger: Ledger) -> list[str]:
    """Staged batches no live owner holds and whose retry delay has passed, oldest first."""
    now = utcnow()
    return [b for b in inbox.batches() if ledger.batch_status(b, now=now).ready]


def in_turn(batches: list[str], owner: str) -> list[str]:
    """`batches` started at a place of the owner's own: workers listing the same ready batches
    then take different ones first, instead of all racing for the oldest and all but one
    finding it taken."""
    if not batches:
        return batches
    start = zlib.crc32(owner.encode()) % len(batches)
    return batches[start:] + batches[:start]


def run_worker(
    *,
    inbox: Inbox,
    open_ledger: Callable[[], Ledger],
    make_pipeline: Callable[[Ledger], Pipeline],
    warehouse: Warehouse,
    owner: str,
    max_items: int,
    max_age_seconds: float,
    poll_seconds: float,
    max_seconds: float,
    stop: threading.Event | None = None,
    on_batch: Callable[[BatchSummary], None] | None = None,
    current_registry: Callable[[], Registry] | None = None,
) -> Totals:
    """Stage and deliver until `max_seconds` have passed or `stop` is set, then return totals.

    Both are checked between batches only: the batch in hand is always finished. An exception
    from one batch is logged and the loop goes on with the others; the failed batch runs again
    when its lease's retry delay allows, so it is never retried in a hot loop. A pass that fails
    outside any batch (the inbox or ledger unreachable) is logged and retried with a growing
    pause. Interrupts (BaseException) propagate: `process_batch` releases the batch lease on the
    way out. `current_registry`, when given, is asked before each batch for the registry in
    force, so a registry change reaches the loop without a restart.
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + max_seconds
    worker = _Worker(inbox, open_ledger, make_pipeline, warehouse, owner, on_batch)
    worker.current_registry = current_registry
    failures = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            pause = poll_seconds
            try:
                worked = worker.one_pass(max_items, max_age_seconds, stop, deadline)
                failures = 0
            except Exception:
                failures += 1
                pause = min(poll_seconds * 2**failures, MAX_FAILURE_PAUSE_SECONDS)
                log.exception("delivery worker pass failed; next pass in %.1f s", pause)
                worker.totals.errors += 1
                worker.discard_ledger()
                worked = False
            if not worked:
                stop.wait(max(0.0, min(pause, deadline - time.monotonic())))
    finally:
        worker.discard_ledger()
    return worker.totals


class _Worker:
    """The loop's state: its ledger connection (reopened after trouble), pipeline and totals."""

    def __init__(
        self,
        inbox: Inbox,
        open_ledger: Callable[[], Ledger],
        make_pipeline: Callable[[Ledger], Pipeline],
        warehouse: Warehouse,
        owner: str,
        on_batch: Callable[[BatchSummary], None] | None,
    ) -> None:
        self.inbox = inbox
        self.open_ledger = open_ledger
        self.make_pipeline = make_pipeline
        self.warehouse = warehouse
        self.owner = owner
        self.on_batch = on_batch
        self.totals = Totals()
        self.current_registry: Callable[[], Registry] | None = None
        self._opened: tuple[Ledger, Pipeline] | None = None
        self._unflushed = False  # a flush failed: events wait in the ledger outbox
        self._idle = False  # the last pass staged and ran nothing

    def one_pass(
        self, max_items: int, max_age_seconds: float, stop: threading.Event, deadline: float
    ) -> bool:
        """Stage what is waiting, then run every ready batch; True if any batch was run.

        After a pass that found nothing to do, whatever is waiting is staged at once, without
        waiting for the age bound: the age bound gathers requests that arrive while batches
        are running into fewer, larger batches, but a request reaching an idle worker has
        nothing to wait for, so it goes after one poll.
        """
        staged = self._stage(max_items, 0.0 if self._idle else max_age_seconds)
        self.totals.staged += staged
        worked = False
        self._refreshed()  # so a registry change is seen (and a broken one reported) when idle
        for batch_id in in_turn(ready_batches(self.inbox, self._open()[0]), self.owner):
            if stop.is_set() or time.monotonic() >= deadline:
                break
            try:
                ran = self._run_batch(batch_id)
            except Exception:
                log.exception("batch %s failed; it runs again when its lease allows", batch_id)
                self.totals.errors += 1
                self.discard_ledger()  # its connection may be what broke
                continue
            worked = worked or ran
        if not worked and self._unflushed:
            self._flush()  # raises again if the warehouse is still away: the pass backs off
        self._idle = not (staged or worked)
        return worked

    def _stage(self, max_items: int, max_age_seconds: float) -> int:
        """Stage in this worker's turn; 0 while another worker has it (its batches are then
        ready for this one to take all the same)."""
        ledger, now = self._open()[0], utcnow()
        turn = staging_turn(now)
        if ledger.acquire_batch(turn, owner=self.owner, lease_seconds=STAGING_TURN_SECONDS,
                                now=now) is None:
            return 0
        try:
            return len(stage_batches(self.inbox, max_items=max_items,
                                     max_age_seconds=max_age_seconds))
        finally:
            ledger.release_batch(turn, owner=self.owner, retry_after_seconds=0.0, now=utcnow())

    def _run_batch(self, batch_id: str) -> bool:
        """Run one batch and flush its events; True if any of its requests reached an outcome.

        False when another owner held it or had already finished it (we listed it as ready just
        before it did), or when it only handed everything back: then the loop pauses before its
        next pass instead of taking the batch again at once.
        """
        pipeline = self._refreshed()
        with pipeline.transport:  # one SMTP session per batch: idle ones get dropped
            summary = pipeline.process_batch(self.inbox, batch_id, owner=self.owner)
        if summary.attempt is None or not summary.requests:
            return False
        self.totals.add_batch(summary)
        if self.on_batch is not None:
            self.on_batch(summary)
        try:
            self._flush()
        except Exception:
            log.exception("writing events to the warehouse failed; they stay in the ledger"
                          " outbox until the next flush")
            self.totals.errors += 1
        return summary.requests > summary.deferred

    def _refreshed(self) -> Pipeline:
        """The pipeline, with the registry in force now."""
        _, pipeline = self._open()
        if self.current_registry is not None:
            pipeline.registry = self.current_registry()
        return pipeline

    def _flush(self) -> None:
        self._unflushed = True
        self.totals.events += flush_events(self._open()[0], self.warehouse)
        self._unflushed = False

    def _open(self) -> tuple[Ledger, Pipeline]:
        if self._opened is None:
            ledger = self.open_ledger()
            self._opened = (ledger, self.make_pipeline(ledger))
        return self._opened

    def discard_ledger(self) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            with suppress(Exception):
                opened[0].close()
