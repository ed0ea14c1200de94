"""Helper processes follow their owner: interrupts are the owner's to handle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from notify_pipeline.child_process import alive, follow_owner, forkserver
from tests.helpers import REPO


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


OWNER_IGNORING_SIGTERM = """
import os, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the forkserver and its children
from notify_pipeline.child_process import forkserver
from tests.test_child_process import _follow_then_wait

context = forkserver()
ready = context.Event()
context.Process(target=_follow_then_wait, args=(os.getpid(), ready), daemon=True).start()
assert ready.wait(30), "the child did not start"
"""


def test_an_owner_that_ignores_sigterm_still_ends_its_children_at_exit() -> None:
    """multiprocessing ends a daemonic child with SIGTERM as its owner exits, then waits for
    it; a child that kept an inherited SIG_IGN made the owner wait out the child's sleep (60 s
    here; an idle hand-off process, which only leaves when told, forever)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", OWNER_IGNORING_SIGTERM], cwd=REPO,
                          capture_output=True, text=True, timeout=45)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
