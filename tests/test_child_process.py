"""Helper processes follow their owner: interrupts are the owner's to handle."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from notify_pipeline.child_process import alive, follow_owner, forkserver


def _follow_then_wait(owner: int, ready: Any) -> None:
    follow_owner(owner)
    ready.set()
    time.sleep(60)


def test_a_child_outlives_a_ctrl_c_to_its_process_group() -> None:
    context = forkserver()
    ready = context.Event()
    child = context.Process(target=_follow_then_wait, args=(os.getpid(), ready), daemon=True)
    child.start()
    try:
        assert ready.wait(30), "the child did not start"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGINT)  # as a Ctrl-C in the terminal does
        time.sleep(0.2)
        assert alive(child.pid) and child.is_alive()
    finally:
        child.kill()
        child.join(10)
    assert not child.is_alive()
