"""Helper processes that must not outlive the process that started them."""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from multiprocessing.context import ForkServerContext

# What every child of the forkserver uses, imported once by the forkserver (not by each child),
# and in place of the default, the caller's `__main__`, which a child has no use for.
PRELOAD = ["notify_pipeline.mime", "notify_pipeline.signing", "notify_pipeline.delivery.smtp"]


def forkserver() -> ForkServerContext:
    """Where our children come from: a process started once, without this one's threads, that
    forks each child (a fork of a threaded process may inherit a lock some thread held)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def follow_owner(owner: int, niceness: int = 0) -> None:
    """Runs in a child: leave Ctrl-C to the owner, and exit as soon as the owner is gone;
    `niceness` > 0 lowers the child's CPU priority by that much (`os.nice`).

    A Ctrl-C reaches every process of the terminal's group, and the owner's first one finishes
    the batch in hand (`run/interrupts.py`), for which it still needs its children. SIGTERM
    gets its default back: it is how `multiprocessing` ends its children when the owner exits,
    and an ignored one is inherited (Dagster gives SIGTERM whatever SIGINT has, and a job
    started in the background ignores SIGINT), so the owner would wait at exit forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if niceness > 0:
        os.nice(niceness)
    exit_with_owner(owner)


def exit_with_owner(owner: int) -> None:
    """Runs in a child: exit as soon as the process that owns it (`owner`) is gone.

    A forkserver child cannot wait for its parent instead: every child holds the fd that would
    tell the forkserver its client died, so after a SIGKILL none would ever leave, and a caller
    reading the owner's output would wait for them forever. A pidfd (Linux 5.3+) becomes
    readable when the owner exits, zombie or not; elsewhere we poll once a second.
    """

    def watch() -> None:
        try:
            descriptor = os.pidfd_open(owner)
        except (AttributeError, OSError):  # no pidfds here: poll
            while alive(owner):
                time.sleep(1.0)
        else:
            select.select([descriptor], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
