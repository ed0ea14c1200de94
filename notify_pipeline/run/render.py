"""Rendering and signing, ahead of the hand-offs: in the run's process for small batches, in a
pool of worker processes (CPU-bound: MIME folding, DKIM) for larger ones, at most a window of
messages ahead of the hand-offs so a batch's memory does not grow with its size."""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
    """Turns a batch's envelopes into signed bytes; `processes` < 2 renders in the run."""

    signer_for: Callable[[str], Signer]
    clock: Callable[[], datetime]
    processes: int
    window: int = RENDER_WINDOW

    def prestart(self, messages: int) -> None:
        """Start the workers while the batch is still being read, if it will need them."""
        if self.pooled(messages):
            RenderPool.prestart(self.processes)

    def pooled(self, messages: int) -> bool:
        """Whether a batch of `messages` is rendered ahead by the workers."""
        return self.processes >= 2 and messages >= POOL_MIN_MESSAGES

    @contextmanager
    def renderings(self, messages: int, counts: Counts) -> Iterator[Renderings]:
        """Renderings for a batch of about `messages`: by the worker pool, from the moment each
        message is added, when the batch is large enough; else each one here when taken."""
        if not self.pooled(messages):
            yield _RenderHere(self, counts)
            return
        chunk = max(1, min(16, messages // (4 * self.processes), self.window))
        with RenderPool.ahead(self, chunk, counts) as ahead:
            yield ahead

    def task(self, env: Envelope) -> RenderTask | Rendered:
        """The work for `env`, or the failure to find its signer."""
        try:
            return RenderTask(env, self.clock(), self.signer_for(env.domain))
        except Exception as exc:  # e.g. an unreadable key: this message fails, not the batch
            return Rendered.failed(exc)


class Renderings(Protocol):
    """A batch's messages, rendered and signed. Messages are added as they are decided, `keep`
    then names those that will be taken (the ones claimed, in the order added), and `take`
    returns each in that order."""

    @property
    def pooled(self) -> bool: ...
    def add(self, key: str, env: Envelope) -> None: ...
    def keep(self, keys: Sequence[str]) -> None: ...
    def take(self, key: str) -> Rendered: ...


class _RenderHere:
    """Each message rendered in the run's process when it is taken, just before its hand-off."""

    pooled = False

    def __init__(self, renderer: Renderer, counts: Counts) -> None:
        self._renderer = renderer
        self._counts = counts
        self._added: dict[str, Envelope] = {}

    def add(self, key: str, env: Envelope) -> None:
        self._added[key] = env

    def keep(self, keys: Sequence[str]) -> None:
        self._added = {key: self._added[key] for key in keys}

    def take(self, key: str) -> Rendered:
        task = self._renderer.task(self._added.pop(key))
        rendered = task if isinstance(task, Rendered) else render_task(task)
        _count(self._counts, rendered)
        return rendered


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
    def ahead(cls, renderer: Renderer, chunk: int, counts: Counts) -> Iterator[_RenderAhead]:
        """Renderings by this pool's workers; whatever is still queued is cancelled when the
        block ends."""
        ahead = _RenderAhead(cls._get(renderer.processes), renderer, chunk, counts)
        try:
            yield ahead
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


class _RenderAhead:
    """Messages given to the workers in chunks as they are added, so rendering overlaps the
    deciding and claiming of the rest of the batch, and then the hand-offs. Back-pressure keeps
    at most `window` messages (whole chunks; `chunk` <= `window`) given to the workers and not
    yet taken or dropped. Until `keep`, only what fills a chunk is given; what `keep` leaves out
    is never started if it has not been, its work wasted otherwise (a window at most)."""

    pooled = True

    def __init__(self, pool: ProcessPoolExecutor, renderer: Renderer, chunk: int,
                 counts: Counts) -> None:
        self._pool = pool
        self._renderer = renderer
        self._chunk = chunk
        self._window = renderer.window
        self._counts = counts
        self._queued: deque[tuple[str, RenderTask]] = deque()  # added, not yet given
        self._futures: deque[tuple[list[str], Future[list[Rendered]]]] = deque()
        self._ready: dict[str, Rendered] = {}  # back from the workers (or failed), not taken
        self._out: set[str] = set()  # given to the workers, not yet taken or dropped
        self._dropped: set[str] = set()  # given before `keep` left them out
        self._kept = False

    def add(self, key: str, env: Envelope) -> None:
        task = self._renderer.task(env)
        if isinstance(task, Rendered):
            self._ready[key] = task
        else:
            self._queued.append((key, task))
            self._top_up()

    def keep(self, keys: Sequence[str]) -> None:
        wanted = set(keys)
        self._queued = deque(entry for entry in self._queued if entry[0] in wanted)
        self._ready = {key: r for key, r in self._ready.items() if key in wanted}
        self._dropped = self._out - wanted
        self._out &= wanted
        self._kept = True
        self._top_up()

    def take(self, key: str) -> Rendered:
        start = time.perf_counter()
        while key not in self._ready:
            names, future = self._futures.popleft()  # IndexError: `key` was never kept
            for name, rendered in zip(names, future.result(), strict=True):
                if name in self._dropped:
                    self._dropped.discard(name)
                else:
                    self._ready[name] = rendered
            self._top_up()
        self._counts.stage_seconds["render_wait"] += time.perf_counter() - start
        rendered = self._ready.pop(key)
        self._out.discard(key)
        self._top_up()  # it has been taken: the next chunk may start
        _count(self._counts, rendered)
        return rendered

    def _top_up(self) -> None:
        while self._queued and (self._kept or len(self._queued) >= self._chunk):
            size = min(self._chunk, len(self._queued))
            if len(self._out) + size > self._window:
                return
            chunk = [self._queued.popleft() for _ in range(size)]
            names = [name for name, _ in chunk]
            self._futures.append((names, self._pool.submit(render_tasks, [t for _, t in chunk])))
            self._out.update(names)

    def cancel(self) -> None:
        """Cancel what no worker has started; what is running ends on its own."""
        while self._futures:
            self._futures.popleft()[1].cancel()


def _count(counts: Counts, rendered: Rendered) -> None:
    counts.stage_seconds["render"] += rendered.render_seconds
    counts.stage_seconds["sign"] += rendered.sign_seconds
