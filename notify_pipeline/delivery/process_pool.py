"""Several SMTP conversations in a process of their own.

A hand-off is mostly the client's Python: smtplib formatting commands and parsing replies between
socket calls. On threads of the run's own process that code takes turns with the run's main
thread for the GIL, and each ledger transaction, whose SQLite calls hand the GIL back and forth,
then waits behind it. Here the conversations run on threads of one child process instead, and
the run's main thread only writes each message to a pipe and reads back what became of it.

The child is a forkserver child (the run is threaded, so never a fork of it) that leaves when the
run's process dies, whatever is queued. Its transports' log records are passed back and logged by
the run's process, so they reach the run's log as before.
"""

from __future__ import annotations

import copy
import itertools
import logging
import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, ClassVar

from notify_pipeline.child_process import follow_owner, forkserver
from notify_pipeline.delivery.base import HandoffResult, OutgoingMessage, Transport
from notify_pipeline.delivery.pool import TransportPool
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    DeliveryError,
    PermanentDeliveryError,
    RecipientsDeferredError,
    RetryableDeliveryError,
)

log = logging.getLogger(__name__)

IDLE_CHILDREN = 2  # kept for later pools: one process runs one transport, tests run many


class ProcessTransportPool(Transport):
    """Up to `size` copies of `template` (an unconnected, picklable transport), each `send`-ing
    on a thread of its own in one child process, started when first needed.

    `start` hands one message over and `finished` takes the hand-offs that have ended; both are
    called from one thread. `send` is both at once, for a caller with one message at a time.
    """

    def __init__(self, template: Transport, size: int) -> None:
        if size < 1:
            raise ValueError("a transport pool needs at least one transport")
        self.concurrency = size
        self.reports_delivery = template.reports_delivery
        self._template = template
        self._child: _Child | None = None
        self._pending: dict[int, Future[HandoffResult]] = {}
        self._ended: list[Future[HandoffResult]] = []  # ended, not yet returned by `finished`
        self._tickets = itertools.count()

    def __repr__(self) -> str:
        return f"ProcessTransportPool({self._template!r}, size={self.concurrency})"

    @property
    def pid(self) -> int | None:
        """The child process handing off for this pool, if one is (None once closed)."""
        return None if self._child is None else self._child.process.pid

    def send(self, message: OutgoingMessage) -> HandoffResult:
        future = self.start(message)
        while not future.done():
            self.finished(block=True)
        return future.result()

    def start(self, message: OutgoingMessage) -> Future[HandoffResult]:
        """Begin handing `message` off; its future holds the result or the transport's error."""
        future: Future[HandoffResult] = Future()
        child = self._running_child()
        ticket = next(self._tickets)
        try:
            child.conn.send((ticket, message))
        except OSError as exc:  # nothing reached the child, so nothing was handed off
            self._lost(child)
            future.set_exception(RetryableDeliveryError(f"the hand-off process is gone: {exc}"))
            self._ended.append(future)
            return future
        self._pending[ticket] = future
        return future

    def finished(self, *, block: bool) -> list[Future[HandoffResult]]:
        """The hand-offs that have ended since the last call; if `block`, wait for at least one
        while any is under way."""
        done, self._ended = self._ended, []
        child = self._child
        while child is not None and self._pending:
            if (done or not block) and not child.conn.poll():
                break
            try:
                kind, ticket, payload = child.conn.recv()
            except (EOFError, OSError):
                self._lost(child)
                done += self._ended
                self._ended = []
                break
            if kind == "log":
                logging.getLogger(payload.name).handle(payload)
                continue
            future = self._pending.pop(ticket)
            if kind == "ok":
                future.set_result(payload)
            else:
                future.set_exception(payload)
            done.append(future)
        return done

    def close(self) -> None:
        """Wait for the hand-offs under way, then let the child say QUIT on its connections and
        wait, idle, for the next pool of the same transport (its start-up, imports included,
        would cost a batch of one message more than its hand-off). Safe to call more than once.
        """
        while self._pending:
            self.finished(block=True)
        self._ended.clear()
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.conn.send(None)
        except OSError:
            child.conn.close()
            return
        _Child.put_back(child)

    def _running_child(self) -> _Child:
        child = self._child
        if child is not None and child.pid != os.getpid():
            child = None  # a forked copy of the pool: that child is not ours
        elif child is not None and not child.process.is_alive():
            self._lost(child)
            child = None
        if child is None:
            child = self._child = _Child.take(self._template, self.concurrency)
        return child

    def _lost(self, child: _Child) -> None:
        """The child died: whatever it was handing off may have been sent. Those hand-offs end
        as ambiguous, and the next `finished` returns them."""
        log.error("the hand-off process (pid %s) died; %d hand-off(s) under way are ambiguous",
                  child.process.pid, len(self._pending))
        if self._child is child:
            self._child = None
        child.conn.close()
        for future in self._pending.values():
            future.set_exception(AmbiguousHandoffError(
                "the hand-off process died while handing the message off"))
            self._ended.append(future)
        self._pending.clear()


class _Child:
    """A child process and our end of its pipe; `pid` is the process that started it.

    Idle children are kept by the transport they were started for (its pickled form and the
    number of connections), one pool using each at a time."""

    _lock = threading.Lock()
    _idle: ClassVar[dict[bytes, list[_Child]]] = {}

    def __init__(self, process: Any, conn: Connection, key: bytes) -> None:
        self.process, self.conn, self.key, self.pid = process, conn, key, os.getpid()
        self.idle_since = 0.0

    @classmethod
    def take(cls, template: Transport, size: int) -> _Child:
        """An idle child for `template`, else a new one."""
        key = pickle.dumps((template, size))
        with cls._lock:
            idle = cls._idle.get(key, [])
            while idle:
                child = idle.pop()
                if child.pid == os.getpid() and child.process.is_alive():
                    return child
        ours, theirs = multiprocessing.Pipe()
        process = forkserver().Process(
            target=_serve, name="notify-handoffs", daemon=True,
            args=(theirs, template, size, os.getpid(), logging.getLogger().getEffectiveLevel()))
        process.start()
        theirs.close()
        return cls(process, ours, key)

    @classmethod
    def put_back(cls, child: _Child) -> None:
        """Keep `child` for the next pool; the longest idle beyond `IDLE_CHILDREN` leave."""
        child.idle_since = time.monotonic()
        with cls._lock:
            cls._idle.setdefault(child.key, []).append(child)
            idle = [c for children in cls._idle.values() for c in children]
            for old in sorted(idle, key=lambda c: c.idle_since)[:-IDLE_CHILDREN]:
                cls._idle[old.key].remove(old)
                old.conn.close()  # it leaves once it reads the end of the pipe
            cls._idle = {key: children for key, children in cls._idle.items() if children}


def _serve(conn: Connection, template: Transport, size: int, owner: int, level: int) -> None:
    """The child: hand each message received off on one of `size` threads, and send back what
    became of it (or a log record) as it happens; leave when told to or when the run is gone
    (a Ctrl-C is the run's to handle)."""
    follow_owner(owner)
    lock = threading.Lock()
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(_PassBack(conn, lock))
    pool = TransportPool(partial(copy.copy, template), size)
    with ThreadPoolExecutor(size, thread_name_prefix="handoff") as threads:
        while (item := _receive(conn)) is not _GONE:
            if item is None:  # the run's pool closed: no hand-off is under way
                pool.close()
            else:
                threads.submit(_hand_off, pool, conn, lock, *item)
    pool.close()


_GONE = object()  # the run's process closed its end of the pipe


def _receive(conn: Connection) -> Any:
    """A message to hand off (ticket, message), None to close the connections, or `_GONE`."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return _GONE


def _hand_off(pool: Transport, conn: Connection, lock: threading.Lock, ticket: int,
              message: OutgoingMessage) -> None:
    try:
        reply: tuple[str, int, Any] = ("ok", ticket, pool.send(message))
    except DeliveryError as exc:
        reply = ("error", ticket, _portable(exc))
    except Exception as exc:  # a defect, after which the message may or may not have gone
        reply = ("error", ticket, AmbiguousHandoffError(
            f"the hand-off failed unexpectedly: {type(exc).__name__}: {exc}"))
    with lock:
        conn.send(reply)


def _portable(exc: DeliveryError) -> DeliveryError:
    """`exc` as it will arrive: an error that cannot make the journey intact becomes one of
    the same kind of outcome that can."""
    try:
        arrived: DeliveryError = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    except Exception:
        if isinstance(exc, RecipientsDeferredError | RetryableDeliveryError):
            return RetryableDeliveryError(str(exc))  # nothing was handed off
        if isinstance(exc, PermanentDeliveryError):
            return PermanentDeliveryError(str(exc))
        return AmbiguousHandoffError(str(exc))
    return arrived


class _PassBack(logging.Handler):
    """Sends each log record to the run's process, which logs it there."""

    def __init__(self, conn: Connection, lock: threading.Lock) -> None:
        super().__init__()
        self._conn, self._lock = conn, lock

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        record.exc_info = record.exc_text = None
        try:
            with self._lock:
                self._conn.send(("log", 0, record))
        except Exception:
            self.handleError(record)
