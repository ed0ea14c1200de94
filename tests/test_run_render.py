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


def add_all(renderings, envs: list[Envelope]) -> list[str]:
    keys = [f"key-{env.message_id}" for env in envs]
    for key, env in zip(keys, envs, strict=True):
        renderings.add(key, env)
    return keys


def test_workers_render_at_most_a_window_ahead_of_the_caller(counter):
    with renderer(counter).renderings(MESSAGES, Counts()) as renderings:
        keys = add_all(renderings, envelopes(MESSAGES))
        renderings.keep(keys)
        taken = [renderings.take(key) for key in keys[:10]]
        # unbounded, the workers would sign the whole batch while the caller is busy
        assert wait_for_more_than(counter, 10 + WINDOW, seconds=2.0) <= 10 + WINDOW
        taken += [renderings.take(key) for key in keys[10:]]
    assert len(taken) == MESSAGES
    for i, rendered in enumerate(taken):
        assert rendered.data is not None and rendered.data.startswith(b"Signed: yes\r\n")
        assert f"Subject: Summary {i}\r\n".encode() in rendered.data
    assert signed(counter) == MESSAGES


def test_workers_begin_as_messages_are_added_before_the_claim(counter):
    with renderer(counter).renderings(MESSAGES, Counts()) as renderings:
        add_all(renderings, envelopes(MESSAGES))
        # nothing kept or taken yet: the workers fill their window all the same
        assert wait_for_more_than(counter, 0, seconds=5.0) > 0
        assert wait_for_more_than(counter, WINDOW, seconds=1.0) <= WINDOW


def test_only_kept_messages_are_taken_and_dropped_ones_are_not_started(counter):
    counts = Counts()
    with renderer(counter).renderings(MESSAGES, counts) as renderings:
        keys = add_all(renderings, envelopes(MESSAGES))
        kept = keys[1::2]  # e.g. every other one was a duplicate
        renderings.keep(kept)
        taken = [renderings.take(key) for key in kept]
    assert [r.data is not None and f"Subject: Summary {2 * i + 1}\r\n".encode() in r.data
            for i, r in enumerate(taken)] == [True] * len(kept)
    # the dropped ones were signed only if given to the workers before `keep`: a window at most
    assert len(kept) <= signed(counter) <= len(kept) + WINDOW
    assert counts.stage_seconds["sign"] > 0


def test_small_batches_render_in_the_run_when_taken(counter):
    with renderer(counter).renderings(8, Counts()) as renderings:
        keys = add_all(renderings, envelopes(8))
        renderings.keep(keys[:3])
        assert not renderings.pooled and signed(counter) == 0
        taken = [renderings.take(key) for key in keys[:3]]
    assert all(r.data is not None for r in taken) and signed(counter) == 3


def test_a_message_without_a_signer_fails_without_reaching_the_workers():
    def signer_for(domain: str) -> CountingSigner:
        raise OSError("the key cannot be read")

    pooled = Renderer(signer_for, lambda: DATE, processes=2, window=WINDOW)
    with pooled.renderings(MESSAGES, Counts()) as renderings:
        keys = add_all(renderings, envelopes(40))
        renderings.keep(keys)
        taken = [renderings.take(key) for key in keys]
    assert {r.error for r in taken} == {"OSError"}


def test_leaving_early_cancels_what_the_workers_have_not_started(counter):
    with renderer(counter).renderings(MESSAGES, Counts()) as renderings:
        keys = add_all(renderings, envelopes(MESSAGES))
        renderings.keep(keys)
        for key in keys[:10]:
            renderings.take(key)
    assert wait_for_more_than(counter, 10 + WINDOW, seconds=1.0) <= 10 + WINDOW


@dataclass(frozen=True)
class NicenessSigner:
    """Writes the niceness of the process that signs into the message."""

    def sign(self, message: bytes) -> bytes:
        return f"Niceness: {os.nice(0)}\r\n".encode() + message


def test_workers_sign_at_a_lower_priority_than_the_run():
    signer = NicenessSigner()
    pooled = Renderer(lambda _domain: signer, lambda: DATE, processes=2, window=WINDOW)
    with pooled.renderings(64, Counts()) as renderings:
        keys = add_all(renderings, envelopes(64))
        renderings.keep(keys)
        stamps = {r.data.split(b"\r\n", 1)[0] for key in keys
                  if (r := renderings.take(key)).data is not None}
    expected = min(19, os.nice(0) + RENDER_NICENESS)
    assert stamps == {f"Niceness: {expected}".encode()}
