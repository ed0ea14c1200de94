"""The transports' wait between attempts: exponential, capped, and jittered."""

from __future__ import annotations

import random

import pytest

from notify_pipeline.delivery.backoff import jittered_backoff


@pytest.mark.parametrize(("attempt", "planned"),
                         [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 10.0)])
def test_each_wait_is_between_half_and_all_of_the_capped_exponential(attempt, planned) -> None:
    assert jittered_backoff(attempt, base=0.5, cap=10.0, draw=lambda: 0.0) == planned / 2
    assert jittered_backoff(attempt, base=0.5, cap=10.0, draw=lambda: 1.0) == planned
    waits = [jittered_backoff(attempt, base=0.5, cap=10.0) for _ in range(200)]
    assert all(planned / 2 <= w <= planned for w in waits)


def test_senders_that_failed_together_do_not_come_back_together() -> None:
    draw = random.Random(7).random
    waits = {round(jittered_backoff(2, base=0.5, cap=30.0, draw=draw), 6) for _ in range(50)}
    assert len(waits) == 50
