"""`TransportPool`: several transports behind one, each used by one `send` at a time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from notify_pipeline.delivery.base import (
    HandoffResult,
    OutgoingMessage,
    RecipientOutcome,
    RecipientStatus,
    Transport,
)
from notify_pipeline.delivery.pool import TransportPool
from notify_pipeline.errors import RetryableDeliveryError


class Connection(Transport):
    """One connection of our own interface: knows who uses it and fails on request."""

    reports_delivery = False

    def __init__(self, gate: threading.Barrier | None = None) -> None:
        self.gate = gate
        self.users = 0
        self.most_users = 0
        self.sent: list[str] = []
        self.closed = 0
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> HandoffResult:
        with self._lock:
            self.users += 1
            self.most_users = max(self.most_users, self.users)
        try:
            if self.gate is not None:
                self.gate.wait(timeout=5)
            if message.message_id.startswith("fail"):
                raise RetryableDeliveryError("provider down")
            self.sent.append(message.message_id)
            return HandoffResult(f"id-{message.message_id}", (
                RecipientOutcome(message.recipients[0], RecipientStatus.ACCEPTED),))
        finally:
            with self._lock:
                self.users -= 1

    def close(self) -> None:
        self.closed += 1


class Factory:
    """Builds connections for a pool and keeps them for the test to inspect."""

    def __init__(self, gate: threading.Barrier | None = None) -> None:
        self.gate = gate
        self.made: list[Connection] = []

    def __call__(self) -> Connection:
        self.made.append(Connection(self.gate))
        return self.made[-1]


def message(message_id: str) -> OutgoingMessage:
    return OutgoingMessage("svc", message_id, "from@example.org", ("to@example.org",), b"x")


def test_concurrent_sends_each_get_a_transport_of_their_own() -> None:
    gate = threading.Barrier(3)  # all three sends must be under way at once to pass it
    factory = Factory(gate)
    made = factory.made
    pool = TransportPool(factory, size=3)

    with ThreadPoolExecutor(3) as threads:
        results = list(threads.map(pool.send, [message(f"m{i}") for i in range(3)]))

    assert [r.provider_message_id for r in results] == ["id-m0", "id-m1", "id-m2"]
    assert len(made) == 3
    assert all(c.most_users == 1 for c in made), "a transport is never shared by two sends"
    assert pool.concurrency == 3
    assert pool.reports_delivery is False, "taken from the transports it pools"


def test_sends_one_after_another_reuse_one_transport() -> None:
    factory = Factory()
    made = factory.made
    pool = TransportPool(factory, size=4)
    for i in range(5):
        pool.send(message(f"m{i}"))
    assert len(made) == 1
    assert made[0].sent == [f"m{i}" for i in range(5)]


def test_a_failed_send_returns_its_transport_and_raises() -> None:
    factory = Factory()
    made = factory.made
    pool = TransportPool(factory, size=2)
    with pytest.raises(RetryableDeliveryError):
        pool.send(message("fail-1"))
    pool.send(message("m2"))
    assert len(made) == 1, "the transport came back to the pool after the failure"


def test_close_closes_every_transport_and_the_pool_stays_usable() -> None:
    gate = threading.Barrier(2)
    factory = Factory(gate)
    made = factory.made
    pool = TransportPool(factory, size=2)
    with ThreadPoolExecutor(2) as threads:
        list(threads.map(pool.send, [message("m1"), message("m2")]))
    pool.close()
    assert [c.closed for c in made] == [1, 1]
    gate.reset()
    made[0].gate = made[1].gate = None
    pool.send(message("m3"))  # transports reconnect lazily, as a closed transport does
    assert sum(len(c.sent) for c in made) == 3


def test_more_sends_at_once_than_the_pool_allows_is_a_bug() -> None:
    gate = threading.Barrier(2)
    pool = TransportPool(lambda: Connection(gate), size=1)
    started = threading.Thread(target=pool.send, args=(message("m1"),))
    started.start()
    try:
        with pytest.raises(RuntimeError, match="more than 1 hand-offs at once"):
            pool.send(message("m2"))
    finally:
        gate.wait(timeout=5)  # let the first send finish
        started.join(timeout=5)


def test_a_pool_needs_a_size() -> None:
    with pytest.raises(ValueError):
        TransportPool(Connection, size=0)
