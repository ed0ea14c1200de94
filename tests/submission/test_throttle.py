"""The failed-AUTH throttle, with a fake clock and a sleep that records instead of waiting."""

from __future__ import annotations

import asyncio

from notify_pipeline.submission.throttle import FailureThrottle
from tests.submission.conftest import RecordingSleep


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: FailureThrottle, peer: str, times: int) -> list[float]:
    return [asyncio.run(throttle.failed(peer)) for _ in range(times)]


def test_the_delay_doubles_per_failure_up_to_the_bound():
    sleep = RecordingSleep()
    throttle = FailureThrottle(base_delay=0.5, max_delay=4.0, clock=Clock(), sleep=sleep)
    assert fail(throttle, "192.0.2.1", 6) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert sleep.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_each_peer_is_counted_on_its_own():
    throttle = FailureThrottle(clock=Clock(), sleep=RecordingSleep())
    fail(throttle, "192.0.2.1", 3)
    assert fail(throttle, "192.0.2.2", 1) == [0.5]
    assert throttle.failures("192.0.2.1") == 3


def test_failures_are_forgotten_after_a_quiet_period():
    clock = Clock()
    throttle = FailureThrottle(forget_after=60.0, clock=clock, sleep=RecordingSleep())
    fail(throttle, "192.0.2.1", 3)
    clock.now += 59
    assert throttle.failures("192.0.2.1") == 3
    clock.now += 61
    assert fail(throttle, "192.0.2.1", 1) == [0.5]


def test_memory_is_bounded_however_many_peers_fail():
    clock = Clock()
    throttle = FailureThrottle(max_peers=10, clock=clock, sleep=RecordingSleep())
    for number in range(50):
        clock.now += 1
        fail(throttle, f"198.51.100.{number}", 1)
    assert throttle.tracked_peers <= 10
    assert throttle.failures("198.51.100.49") == 1
