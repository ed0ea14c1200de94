"""A planned stop: the first interrupt lets the worker loop finish the batch in hand."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from notify_pipeline.ledger.base import Ledger, current_owner
from notify_pipeline.run import run_worker
from notify_pipeline.run.interrupts import stop_on_interrupt
from tests.test_worker import before_each_handoff, delivered_ids, enqueue, worker_parts


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_mid_batch_finishes_the_batch_then_stops(local, sink, signum):
    enqueue(local, "m1", "m2", "m3", "m4")
    with worker_parts(local, batch_max_size=2) as parts:
        make = parts["make_pipeline"]
        signalled: list[int] = []

        def interrupted_pipeline(book: Ledger) -> Any:
            pipeline = make(book)

            def signal_once() -> None:
                if not signalled:
                    signalled.append(signum)
                    os.kill(os.getpid(), signum)  # as Dagster does when the run is to end

            before_each_handoff(pipeline, signal_once)
            return pipeline

        stop = threading.Event()
        with stop_on_interrupt(stop):
            totals = run_worker(**{**parts, "make_pipeline": interrupted_pipeline},
                                owner=current_owner("w"), poll_seconds=0.05, max_seconds=60,
                                stop=stop)
        inbox = parts["inbox"]
        left = [len(list(inbox.read(b))) for b in inbox.batches()]
    assert stop.is_set()
    assert totals.batches == 1 and totals.delivered == 2, "the batch in hand finished whole"
    assert left == [2], "the next batch waits, staged, for the next owner"
    assert sum(delivered_ids(local).values()) == 2


def test_a_second_interrupt_is_handled_as_before_and_handlers_are_restored():
    stop = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), stop_on_interrupt(stop):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
