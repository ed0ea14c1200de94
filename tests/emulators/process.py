"""Start an emulator process, wait until it answers, stop it and everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def spawn(command: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own (so its children stop with it)."""
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)


def answers(url: str) -> Callable[[], bool]:
    """A readiness probe: the URL answers an HTTP GET with a success status."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
    return probe


def wait_ready(proc: subprocess.Popen[bytes], probe: Callable[[], bool], *, what: str,
               log: Path, seconds: float, interval: float = 0.05) -> None:
    """Poll `probe` until it passes; fail with the log's tail if the process dies or is slow."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if probe():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what} not ready in {seconds}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            _wait_group_gone(proc.pid, 10)
            return
        except (subprocess.TimeoutExpired, TimeoutError):
            continue


def _wait_group_gone(pgid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"process group {pgid} still alive")
