"""SES's account-wide `MaxSendRate`, shared by every worker: a token bucket row in the ledger.

Each send reserves its recipients in one short ledger transaction and is told how long to wait
(`Ledger.take_tokens`); reservations queue in the order they were taken, whichever process or
thread took them, so any number of workers on one ledger together stay under the rate. The
wait itself is spent outside any transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from notify_pipeline.errors import RetryableDeliveryError
from notify_pipeline.ledger.base import Ledger


class SharedSendRate:
    """`rate` recipients a second, bursts up to `burst` (one second's worth by default), counted
    in `bucket` of `ledger` for every process that uses the same bucket name."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        bucket: str,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("max_send_rate must be positive")
        self.rate = rate
        self.burst = max(burst if burst is not None else rate, 1.0)
        self.bucket = bucket
        self._ledger, self._clock, self._sleep = ledger, clock, sleep

    def __repr__(self) -> str:
        return f"SharedSendRate(bucket={self.bucket!r}, rate={self.rate})"

    def acquire(self, cost: int) -> float:
        """Reserve `cost` recipients and wait for them; nothing was sent if the ledger fails,
        so that is a `RetryableDeliveryError` (the message is handed back, not failed)."""
        try:
            wait = self._ledger.take_tokens(self.bucket, cost, rate=self.rate, burst=self.burst,
                                            now=self._clock())
        except Exception as exc:
            raise RetryableDeliveryError(
                f"the shared send rate could not be read: {type(exc).__name__}") from exc
        if wait > 0:
            self._sleep(wait)
        return wait
