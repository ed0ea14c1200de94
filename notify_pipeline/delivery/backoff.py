"""The wait before a transport's next attempt: exponential, capped, with jitter.

Without jitter every sender that met the same outage (several connections, several workers)
comes back at the same instants and meets the provider together again. "Equal jitter" keeps
half of the exponential wait and draws the other half at random: spread out, yet never sooner
than half the planned wait.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def jittered_backoff(attempt: int, *, base: float, cap: float,
                    draw: Callable[[], float] = random.random) -> float:
    """The wait after failed attempt `attempt` (from 1): within [d/2, d], where
    d = min(cap, base * 2^(attempt - 1))."""
    planned = min(cap, base * 2 ** (attempt - 1))
    return float(planned / 2 + draw() * planned / 2)
