"""Slowing down password guessing: each failed AUTH from an address delays the next reply more.

The delay doubles with every failure from the same peer address, up to a bound, and the count
is forgotten once the address has not failed for `forget_after` seconds. Delaying the 535 reply
(rather than refusing the connection) keeps a mistyped password cheap for a real user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int
    last: float


class FailureThrottle:
    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        forget_after: float = 900.0,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_peers = max_peers
        self._clock = clock
        self._sleep = sleep
        self._peers: dict[str, _Record] = {}

    @property
    def tracked_peers(self) -> int:
        """How many peer addresses are remembered (at most `max_peers`)."""
        return len(self._peers)

    def failures(self, peer: str) -> int:
        record = self._peers.get(peer)
        if record is None or self._clock() - record.last > self.forget_after:
            return 0
        return record.failures

    async def failed(self, peer: str) -> float:
        """Count a failure from `peer` and wait the delay it earns; returns that delay."""
        count = self.failures(peer) + 1
        self._peers[peer] = _Record(count, self._clock())
        if len(self._peers) > self.max_peers:
            self._forget_old()
        delay = min(self.base_delay * 2.0 ** min(count - 1, 32), self.max_delay)
        await self._sleep(delay)
        return delay

    def _forget_old(self) -> None:
        now = self._clock()
        self._peers = {p: r for p, r in self._peers.items() if now - r.last <= self.forget_after}
        while len(self._peers) > self.max_peers:  # a flood of fresh peers: drop the oldest
            del self._peers[min(self._peers, key=lambda p: self._peers[p].last)]
