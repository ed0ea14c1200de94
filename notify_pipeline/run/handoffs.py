"""Hand-offs under way: up to `transport.concurrency` at once."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Protocol

from notify_pipeline.delivery.base import HandoffResult, OutgoingMessage, Transport
from notify_pipeline.delivery.process_pool import ProcessTransportPool
from notify_pipeline.run.decide import Accepted


@dataclass(frozen=True)
class Claimed:
    """An accepted message this attempt holds in the ledger, and how many claims it has had."""

    accepted: Accepted
    attempts: int


@dataclass(frozen=True)
class Finished:
    """A hand-off that has ended, its answer (or error) in `future`."""

    job: Claimed
    future: Future[HandoffResult]


class Handoffs:
    """`submit` starts one hand-off and, once all are busy, waits for at least one to finish;
    finished hand-offs come back to the caller's thread, which alone records them. With a
    concurrency of one the send runs right here, on the caller's thread; a
    `ProcessTransportPool` runs its sends in its own process, other transports on threads here.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._width = max(1, transport.concurrency)
        self._lanes: _Lanes | None = None
        if isinstance(transport, ProcessTransportPool):
            self._lanes = transport
        elif self._width > 1:
            self._lanes = _Threads(transport, self._width)
        self._running: dict[Future[HandoffResult], Claimed] = {}

    def __enter__(self) -> Handoffs:
        return self

    def __exit__(self, *exc: object) -> None:
        """Let the sends under way end (bounded by their timeout); their outcomes are not
        recorded, so they stay `handing_off` for the ledger to settle as ambiguous."""
        while self._lanes is not None and self._running:
            for future in self._lanes.finished(block=True):
                self._running.pop(future, None)
        if isinstance(self._lanes, _Threads):
            self._lanes.shutdown()

    def submit(self, job: Claimed, outgoing: OutgoingMessage) -> list[Finished]:
        if self._lanes is None:
            future: Future[HandoffResult] = Future()
            try:
                future.set_result(self._transport.send(outgoing))
            except Exception as exc:  # delivered to the caller by `future.result()`
                future.set_exception(exc)
            return [Finished(job, future)]
        self._running[self._lanes.start(outgoing)] = job
        if len(self._running) < self._width:
            return []
        return self._take(self._lanes.finished(block=True))

    def drain(self) -> list[Finished]:
        """Wait for every hand-off under way."""
        finished: list[Finished] = []
        while self._lanes is not None and self._running:
            finished += self._take(self._lanes.finished(block=True))
        return finished

    def _take(self, done: list[Future[HandoffResult]]) -> list[Finished]:
        return [Finished(self._running.pop(future), future) for future in done]


class _Lanes(Protocol):
    def start(self, message: OutgoingMessage) -> Future[HandoffResult]: ...
    def finished(self, *, block: bool) -> list[Future[HandoffResult]]: ...


class _Threads:
    """Sends on threads of this process. Each future puts itself on a queue when done, and the
    caller takes what is on it: one lock per message, where `concurrent.futures.wait` would lock
    and unlock every running future's condition at each call."""

    def __init__(self, transport: Transport, width: int) -> None:
        self._transport = transport
        self._threads = ThreadPoolExecutor(width, thread_name_prefix="handoff")
        self._done: SimpleQueue[Future[HandoffResult]] = SimpleQueue()

    def start(self, message: OutgoingMessage) -> Future[HandoffResult]:
        started = self._threads.submit(self._transport.send, message)
        started.add_done_callback(self._done.put)
        return started

    def finished(self, *, block: bool) -> list[Future[HandoffResult]]:
        """What has finished; if `block`, at least one (the caller knows one is under way)."""
        done = [self._done.get()] if block else []
        while True:
            try:
                done.append(self._done.get_nowait())
            except Empty:
                return done

    def shutdown(self) -> None:
        self._threads.shutdown(wait=True)
