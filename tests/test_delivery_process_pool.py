"""`ProcessTransportPool`: SMTP conversations in a child process, against a real SMTP peer."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.fault_peers import FaultySmtp, SmtpFault
from notify_pipeline.child_process import alive
from notify_pipeline.delivery.base import OutgoingMessage, RecipientStatus
from notify_pipeline.delivery.process_pool import IDLE_CHILDREN, ProcessTransportPool, _portable
from notify_pipeline.delivery.smtp import SmtpTransport
from notify_pipeline.errors import (
    AmbiguousHandoffError,
    PermanentDeliveryError,
    RecipientsDeferredError,
    RetryableDeliveryError,
)

GREYLISTED = "greylisted@example.org"
STALLED = "stalled@example.org"
DROPPED = "dropped@example.org"


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[FaultySmtp]:
    plan = {GREYLISTED: [SmtpFault.parse("rcpt:450")], STALLED: [SmtpFault.parse("data:stall")],
            DROPPED: [SmtpFault.parse("rcpt:drop")]}
    with FaultySmtp(tmp_path / "mail", plan, repeat=True, stall_seconds=30) as server:
        yield server


def pool_for(peer: FaultySmtp, size: int = 3) -> ProcessTransportPool:
    template = SmtpTransport(host="127.0.0.1", port=peer.port, backoff_seconds=0.01, timeout=60)
    return ProcessTransportPool(template, size)


def outgoing(recipient: str, n: int = 0) -> OutgoingMessage:
    data = (f"From: a@notify.example.org\r\nTo: {recipient}\r\nSubject: {n}\r\n\r\nHello\r\n"
            .encode())
    return OutgoingMessage("lookup-notices", f"m-{n}", "a@notify.example.org", (recipient,), data)


def test_each_message_is_handed_off_once_and_each_future_gets_its_own_result(
        peer: FaultySmtp) -> None:
    recipients = [f"r{n}@example.org" for n in range(12)]
    with pool_for(peer) as pool:
        futures = [pool.start(outgoing(r, n)) for n, r in enumerate(recipients)]
        done = []
        while len(done) < len(futures):
            done += pool.finished(block=True)
    assert sorted(map(id, done)) == sorted(map(id, futures))
    for recipient, future in zip(recipients, futures, strict=True):
        (outcome,) = future.result().outcomes
        assert (outcome.recipient, outcome.status) == (recipient, RecipientStatus.ACCEPTED)
    assert peer.copies == dict.fromkeys(recipients, 1)


def test_every_recipient_refused_for_now_arrives_with_its_refusals(peer: FaultySmtp) -> None:
    with pool_for(peer) as pool, pytest.raises(RecipientsDeferredError) as raised:
        pool.send(outgoing(GREYLISTED))
    (outcome,) = raised.value.result.outcomes
    assert (outcome.status, outcome.code) == (RecipientStatus.FAILED, 450)
    assert peer.copies[GREYLISTED] == 0


def test_the_transports_warnings_reach_this_process_log(
        peer: FaultySmtp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with pool_for(peer) as pool, pytest.raises(RetryableDeliveryError, match="gave up"):
        pool.send(outgoing(DROPPED))
    warned = [r for r in caplog.records if r.name == "notify_pipeline.delivery.smtp"]
    assert len(warned) == 3  # one per attempt, each naming the message
    assert all("lookup-notices/m-0" in r.getMessage() for r in warned)
    assert all(r.process != os.getpid() for r in warned)


def test_a_dead_child_leaves_its_hand_offs_ambiguous_and_the_next_gets_a_new_child(
        peer: FaultySmtp) -> None:
    with pool_for(peer) as pool:
        future = pool.start(outgoing(STALLED))
        deadline = time.monotonic() + 10
        while not peer.copies[STALLED] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert peer.copies[STALLED] == 1, "the peer never stored the message"
        first = pool.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # while the peer holds back its reply to DATA
        assert pool.finished(block=True) == [future]
        with pytest.raises(AmbiguousHandoffError, match="died"):
            future.result()
        (outcome,) = pool.send(outgoing("after@example.org", 1)).outcomes
        assert outcome.status is RecipientStatus.ACCEPTED
        assert pool.pid not in (None, first)


def test_a_closed_pools_child_serves_the_next_pool_of_the_same_transport(
        peer: FaultySmtp) -> None:
    first = pool_for(peer)
    first.send(outgoing("one@example.org"))
    child = first.pid
    first.close()
    assert first.pid is None
    with pool_for(peer) as second:
        second.send(outgoing("two@example.org", 1))
        assert second.pid == child
    with pool_for(peer, size=2) as other:  # another number of connections: another child
        other.send(outgoing("three@example.org", 2))
        assert other.pid != child
    assert peer.copies == {"one@example.org": 1, "two@example.org": 1, "three@example.org": 1}


def test_children_kept_idle_are_few_and_the_longest_idle_leave(peer: FaultySmtp) -> None:
    pids = []
    for size in range(1, IDLE_CHILDREN + 3):
        with pool_for(peer, size) as pool:
            pool.send(outgoing(f"size{size}@example.org", size))
            pids.append(pool.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in pids[:-IDLE_CHILDREN] if pid):
        time.sleep(0.05)
    assert [pid is not None and alive(pid) for pid in pids] == [False] * 2 + [True] * IDLE_CHILDREN



def test_a_ctrl_c_to_the_process_group_is_left_to_the_run(peer: FaultySmtp) -> None:
    with pool_for(peer) as pool:
        pool.send(outgoing("before@example.org"))
        child = pool.pid
        assert child is not None
        os.kill(child, signal.SIGINT)  # as a Ctrl-C in the terminal does
        time.sleep(0.2)  # long enough for a child that obeyed them to be gone
        (outcome,) = pool.send(outgoing("after@example.org", 1)).outcomes
        assert outcome.status is RecipientStatus.ACCEPTED
        assert pool.pid == child


EXITING = """
import sys
from notify_pipeline.delivery.base import OutgoingMessage
from notify_pipeline.delivery.process_pool import ProcessTransportPool
from notify_pipeline.delivery.smtp import SmtpTransport

if __name__ == "__main__":
    pool = ProcessTransportPool(SmtpTransport(host="127.0.0.1", port=int(sys.argv[1])), 2)
    pool.send(OutgoingMessage("s", "m", "a@example.org", ("exit@example.org",), b"Hi\\r\\n"))
    pool.close()  # the child waits, idle, for a next pool that never comes
"""


def test_a_process_with_an_idle_child_exits_at_once(peer: FaultySmtp, tmp_path: Path) -> None:
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    began = time.monotonic()
    done = subprocess.run([sys.executable, str(script), str(peer.port)], timeout=60,
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 20
    assert peer.copies["exit@example.org"] == 1


class _TwoPartRefusal(PermanentDeliveryError):
    """Unpicklable as it stands: its arguments are not what it passes to the base class."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")


def test_an_error_that_cannot_cross_the_pipe_arrives_as_the_same_kind_of_outcome() -> None:
    arrived = _portable(_TwoPartRefusal(550, "no such user"))
    assert type(arrived) is PermanentDeliveryError and str(arrived) == "550 no such user"
    assert type(_portable(RetryableDeliveryError("later"))) is RetryableDeliveryError
