"""Rendering and signing, ahead of the hand-offs: in the run's process for small batches, in a
pool of worker processes (CPU-bound: MIME folding, DKIM) for larger ones, at most a window of
messages ahead of the hand-offs so a batch's memory does not grow with its size."""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notify_pipeline import mime
from notify_pipeline.child_process import follow_owner, forkserver
from notify_pipeline.message import Envelope
from notify_pipeline.run.summary import Counts

# Below this many messages a batch is rendered in the run's own process, one message just before
# its hand-off: starting workers (a fork each, then a ~40 ms DKIM key parse each) would cost more.
POOL_MIN_MESSAGES = 32
# At most this many messages are given to the workers and not yet taken by the hand-offs: enough to
# keep every worker busy while the hand-offs catch up, few enough that a batch's rendered bytes,
# pickled tasks and futures stay a small, fixed amount whatever the batch size (back-pressure).
RENDER_WINDOW = 256
# The workers' CPU priority is lowered by this much: they work ahead, so they can wait, while every
# message's hand-off passes the run's process, the hand-off process and the SMTP server in turn,
# and each of those waits for a core whenever a worker holds it. With the workers niced, those
# get a core as soon as they wake, and the workers take whatever CPU is left.
RENDER_NICENESS = 10


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Rendered:
    """A message rendered and signed (`data`), or why it could not be (`error`, `trace`)."""

    data: bytes | None
    error: str | None = None
    trace: str | None = None
    render_seconds: float = 0.0
    sign_seconds: float = 0.0

    @classmethod
    def failed(cls, exc: Exception) -> Rendered:
        return cls(None, type(exc).__name__, traceback.format_exc())


@dataclass(frozen=True)
class RenderTask:
    """What a worker needs to render and sign one message (picklable)."""

    envelope: Envelope
    date: datetime
    signer: Signer


def render_task(task: RenderTask) -> Rendered:
    """Render and sign one message. Never raises: one bad message must not stop the batch."""
    env = task.envelope
    start = time.perf_counter()
    try:
        raw = mime.render(env, date=task.date, message_id_header=mime.make_message_id_header(
            env.service, env.message_id, env.domain))
        rendered = time.perf_counter()
        signed = task.signer.sign(raw)
    except Exception as exc:
        return Rendered.failed(exc)
    return Rendered(signed, render_seconds=rendered - start,
                    sign_seconds=time.perf_counter() - rendered)


def render_tasks(tasks: Sequence[RenderTask]) -> list[Rendered]:
    """Render and sign a chunk of messages (one call to a worker)."""
    return [render_task(task) for task in tasks]


def cpus() -> int:
    """The CPUs this process may use (Linux affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Renderer:
    """Turns a batch's envelopes into signed bytes, in order; `processes` < 2 renders here."""

    signer_for: Callable[[str], Signer]
    clock: Callable[[], datetime]
    processes: int
    window: int = RENDER_WINDOW

    def prestart(self, messages: int) -> None:
        """Start the workers while the batch is still being decided, if it will need them."""
        if messages >= POOL_MIN_MESSAGES:
            RenderPool.prestart(self.processes)

    def pooled(self, messages: int) -> bool:
        """Whether a batch of `messages` is rendered ahead by the workers."""
        return self.processes >= 2 and messages >= POOL_MIN_MESSAGES

    @contextmanager
    def renderings(self, envelopes: Sequence[Envelope], counts: Counts) -> Iterator[
            Iterator[Rendered]]:
        """Every message rendered and signed, in order: by the worker pool when the batch is
        large enough, else each one here just before its hand-off."""
        tasks = [self._task(env) for env in envelopes]
        work = [task for task in tasks if isinstance(task, RenderTask)]
        if not self.pooled(len(work)):
            yield _with_stage_times(
                (task if isinstance(task, Rendered) else render_task(task) for task in tasks),
                counts, waited=False,
            )
            return
        chunk = max(1, min(16, len(work) // (4 * self.processes), self.window))
        with RenderPool.map(self.processes, work, chunk, self.window) as results:
            yield _with_stage_times(
                (task if isinstance(task, Rendered) else next(results) for task in tasks),
                counts, waited=True,
            )

    def _task(self, env: Envelope) -> RenderTask | Rendered:
        """The work for `env`, or the failure to find its signer."""
        try:
            return RenderTask(env, self.clock(), self.signer_for(env.domain))
        except Exception as exc:  # e.g. an unreadable key: this message fails, not the batch
            return Rendered.failed(exc)


class RenderPool:
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
        cls, processes: int, work: Sequence[RenderTask], chunk: int, window: int
    ) -> Iterator[Iterator[Rendered]]:
        """Results in order, with at most `window` messages given to the workers and not yet
        taken from the iterator; whatever is still queued is cancelled when the block ends."""
        ahead = _Window(cls._get(processes), work, chunk, window)
        try:
            yield ahead.results()
        except BrokenProcessPool:
            cls._discard()  # a worker died: the next batch gets a fresh pool
            raise
        finally:
            ahead.cancel()  # e.g. the provider went away and the rest is handed back

    @classmethod
    def _get(cls, processes: int) -> ProcessPoolExecutor:
        with cls._lock:
            key = (os.getpid(), processes)
            if cls._pool is None or cls._key != key:
                cls._pool = ProcessPoolExecutor(processes, mp_context=forkserver(),
                                                initializer=follow_owner,
                                                initargs=(os.getpid(), RENDER_NICENESS))
                cls._key = key
            return cls._pool

    @classmethod
    def _discard(cls) -> None:
        with cls._lock:
            pool, cls._pool, cls._key = cls._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _Window:
    """Chunks of a batch submitted to the pool as the caller takes results: back-pressure that
    keeps at most `window` messages (whole chunks; `chunk` <= `window`) submitted and not yet
    taken."""

    def __init__(self, pool: ProcessPoolExecutor, work: Sequence[RenderTask], chunk: int,
                 window: int) -> None:
        self._pool = pool
        self._chunks = (work[i:i + chunk] for i in range(0, len(work), chunk))
        self._depth = max(1, window // chunk)
        self._futures: deque[Future[list[Rendered]]] = deque()

    def results(self) -> Iterator[Rendered]:
        self._top_up()
        while self._futures:
            yield from self._futures.popleft().result()
            self._top_up()  # the chunk has been taken: the next one may start

    def _top_up(self) -> None:
        while len(self._futures) < self._depth:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._futures.append(self._pool.submit(render_tasks, chunk))

    def cancel(self) -> None:
        """Cancel what no worker has started; what is running ends on its own."""
        while self._futures:
            self._futures.popleft().cancel()


def _with_stage_times(
    results: Iterable[Rendered], counts: Counts, *, waited: bool
) -> Iterator[Rendered]:
    """Pass results through, adding their render and sign times to the counts, and the time
    spent waiting for the workers as `render_wait` when `waited`."""
    iterator = iter(results)
    while True:
        start = time.perf_counter()
        rendered = next(iterator, None)
        if waited:
            counts.stage_seconds["render_wait"] += time.perf_counter() - start
        if rendered is None:
            return
        counts.stage_seconds["render"] += rendered.render_seconds
        counts.stage_seconds["sign"] += rendered.sign_seconds
        yield rendered
