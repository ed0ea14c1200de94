"""Hand-offs under way: up to `transport.concurrency` at once, each on a thread of its own."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, SimpleQueue

from notify_pipeline.delivery.base import HandoffResult, OutgoingMessage, Transport
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
    concurrency of one the send runs right here, on the caller's thread.

    Each hand-off's future puts itself on a queue when done, and the caller takes what is on
    it: one lock per message, where `concurrent.futures.wait` would lock and unlock every
    running future's condition at each call."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._width = max(1, transport.concurrency)
        self._threads = (ThreadPoolExecutor(self._width, thread_name_prefix="handoff")
                         if self._width > 1 else None)
        self._running: dict[Future[HandoffResult], Claimed] = {}
        self._done: SimpleQueue[Future[HandoffResult]] = SimpleQueue()

    def __enter__(self) -> Handoffs:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)  # sends under way end (bounded by their timeout)

    def submit(self, job: Claimed, outgoing: OutgoingMessage) -> list[Finished]:
        if self._threads is None:
            future: Future[HandoffResult] = Future()
            try:
                future.set_result(self._transport.send(outgoing))
            except Exception as exc:  # delivered to the caller by `future.result()`
                future.set_exception(exc)
            return [Finished(job, future)]
        started = self._threads.submit(self._transport.send, outgoing)
        self._running[started] = job
        started.add_done_callback(self._done.put)
        if len(self._running) < self._width:
            return []
        return self._take(self._done.get())

    def drain(self) -> list[Finished]:
        """Wait for every hand-off under way."""
        finished: list[Finished] = []
        while self._running:
            finished += self._take(self._done.get())
        return finished

    def _take(self, first: Future[HandoffResult]) -> list[Finished]:
        """`first` and whatever else has finished meanwhile."""
        done = [first]
        while True:
            try:
                done.append(self._done.get_nowait())
            except Empty:
                break
        return [Finished(self._running.pop(future), future) for future in done]
