"""Several connections to one provider behind the one `Transport` interface.

A single SMTP conversation hands off one message at a time, and each waits for the server's
reply (on a real relay, a network round trip plus the relay's own fsync). Several
conversations at once overlap those waits. The pool lends each `send` an idle transport,
opening one only when all are busy, up to `size`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from notify_pipeline.delivery.base import HandoffResult, OutgoingMessage, Transport


class TransportPool(Transport):
    """Up to `size` transports from `factory`, each used by one `send` at a time."""

    def __init__(self, factory: Callable[[], Transport], size: int) -> None:
        if size < 1:
            raise ValueError("a transport pool needs at least one transport")
        self.concurrency = size
        self._factory = factory
        self._idle: list[Transport] = []
        self._lock = threading.Lock()
        first = factory()  # connects lazily: building one costs nothing
        self.reports_delivery = first.reports_delivery
        self._idle.append(first)
        self._open = 1

    def __repr__(self) -> str:
        return f"TransportPool({self._idle[0] if self._idle else '...'!r}, size={self.concurrency})"

    def send(self, message: OutgoingMessage) -> HandoffResult:
        transport = self._borrow()
        try:
            return transport.send(message)
        finally:
            self._return(transport)

    def close(self) -> None:
        """Close every transport's connection. Like a transport's own `close`, it may be used
        again afterwards: each transport reconnects when next lent out. Call it when no `send`
        is under way."""
        with self._lock:
            idle = list(self._idle)
        for transport in idle:
            transport.close()

    def _borrow(self) -> Transport:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._open >= self.concurrency:
                raise RuntimeError(
                    f"more than {self.concurrency} hand-offs at once on a pool of that size")
            self._open += 1
        return self._factory()

    def _return(self, transport: Transport) -> None:
        with self._lock:
            self._idle.append(transport)
