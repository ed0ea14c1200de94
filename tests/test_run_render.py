"""Rendering ahead of the hand-offs: results in order, and a bounded window of work in flight."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notify_pipeline.message import Envelope
from notify_pipeline.run.render import RENDER_NICENESS, Renderer
from notify_pipeline.run.summary import Counts

DATE = datetime(2026, 11, 2, 9, 30, 15, tzinfo=UTC)
MESSAGES = 400
WINDOW = 40


@dataclass(frozen=True)
class CountingSigner:
    """Counts its signatures in a file (it runs in the worker processes), one byte each."""

    path: str

    def sign(self, message: bytes) -> bytes:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
        return b"Signed: yes\r\n" + message


def envelopes(n: int) -> list[Envelope]:
    return [
        Envelope(service="lookup-notices", message_id=f"req-{i}", from_display="Lookup",
                 from_address="lookup@notify.example.org", to=("alice@example.org",),
                 subject=f"Summary {i}", text="Hello.\n")
        for i in range(n)
    ]


def signed(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wait_for_more_than(path: Path, bound: int, seconds: float) -> int:
    """The signature count once it passes `bound`, or after `seconds` if it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and signed(path) <= bound:
        time.sleep(0.05)
    return signed(path)


@pytest.fixture
def counter(tmp_path: Path) -> Path:
    return tmp_path / "signatures"


def renderer(counter: Path) -> Renderer:
    signer = CountingSigner(str(counter))
    return Renderer(lambda _domain: signer, lambda: DATE, processes=2, window=WINDOW)


def test_workers_render_at_most_a_window_ahead_of_the_caller(counter):
    with renderer(counter).renderings(envelopes(MESSAGES), Counts()) as results:
        taken = [next(results) for _ in range(10)]
        # unbounded, the workers would sign the whole batch while the caller is busy
        assert wait_for_more_than(counter, 10 + WINDOW, seconds=2.0) <= 10 + WINDOW
        taken += list(results)
    assert len(taken) == MESSAGES
    for i, rendered in enumerate(taken):
        assert rendered.data is not None and rendered.data.startswith(b"Signed: yes\r\n")
        assert f"Subject: Summary {i}\r\n".encode() in rendered.data
    assert signed(counter) == MESSAGES


def test_leaving_early_cancels_what_the_workers_have_not_started(counter):
    with renderer(counter).renderings(envelopes(MESSAGES), Counts()) as results:
        for _ in range(10):
            next(results)
    assert wait_for_more_than(counter, 10 + WINDOW, seconds=1.0) <= 10 + WINDOW


@dataclass(frozen=True)
class NicenessSigner:
    """Writes the niceness of the process that signs into the message."""

    def sign(self, message: bytes) -> bytes:
        return f"Niceness: {os.nice(0)}\r\n".encode() + message


def test_workers_sign_at_a_lower_priority_than_the_run():
    signer = NicenessSigner()
    pooled = Renderer(lambda _domain: signer, lambda: DATE, processes=2, window=WINDOW)
    with pooled.renderings(envelopes(64), Counts()) as results:
        stamps = {r.data.split(b"\r\n", 1)[0] for r in results if r.data is not None}
    expected = min(19, os.nice(0) + RENDER_NICENESS)
    assert stamps == {f"Niceness: {expected}".encode()}
