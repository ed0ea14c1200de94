"""Planned stops: an interrupt asks the worker loop to stop after the batch in hand.

Dagster stops a run by interrupting its process (SIGINT when the run is terminated, SIGINT or
SIGTERM when `notify up` or the code server stops), and by default the interrupt is raised
wherever the loop happens to be. The ledger makes that safe, but the run then ends as a failure
with a traceback through whatever was running. Here the first interrupt only sets the loop's
`stop` event, so the batch in hand is finished and the run ends on its own terms; a second one
is handled as before (an operator who insists gets the immediate stop).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM sets `stop` instead of raising.

    Signal handlers belong to the main thread; elsewhere this changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            log.warning("%s received: finishing the batch in hand, then stopping",
                        signal.Signals(signum).name)
            stop.set()
            return
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)
        else:
            raise KeyboardInterrupt

    for signum in STOP_SIGNALS:
        signal.signal(signum, request_stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
