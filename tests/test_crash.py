"""Crash matrix: `notify process` is SIGKILLed at each named point, then run again.

Whatever the point, every message ends delivered at most once, with exactly one terminal event per
recipient. A crash before hand-off delivers after restart; a crash after hand-off never delivers
again, and a message whose hand-off outcome was lost is recorded as ambiguous. With one SMTP
connection at most one message is ever being handed off, so the matrix is exact; with several,
every message that was being handed off when the process died is ambiguous (delivered or not,
never twice), so at most as many as there are connections; in a batch the render workers render
ahead, a finished hand-off is committed with the next one's start, so at most twice as many.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

TERMINAL = {"delivery", "bounce", "failure", "reject"}
MESSAGES = [f"m{n}" for n in range(1, 6)]

pytestmark = pytest.mark.crash


def run_process(
    local, crash_at: str | None = None, *, connections: int = 1, command: str = "process",
    **settings: str,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **local.env, "NOTIFY_SMTP_CONNECTIONS": str(connections),
           **{f"NOTIFY_{name.upper()}": value for name, value in settings.items()}}
    env.pop("NOTIFY_CRASH_AT", None)
    if crash_at:
        env["NOTIFY_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "notify_pipeline.cli", command], env=env,
                          capture_output=True, text=True, timeout=120)


def delivered_subjects(local) -> Counter[str]:
    return Counter(
        str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"])
        for raw in local.maildir()
    )


def terminal_events(local) -> Counter[tuple[str, str]]:
    rows = local.events()
    assert len({r["event_id"] for r in rows}) == len(rows), "events are stored once each"
    return Counter((r["message_id"], r["recipient"]) for r in rows
                   if r["event_type"] in TERMINAL)


@pytest.mark.parametrize(
    ("crash_at", "ambiguous"),
    [
        ("after_stage", set()),
        ("after_claim", set()),
        ("after_sign:2", set()),
        ("after_handoff:2", {"m2"}),
        ("after_record:2", set()),
        ("after_flush", set()),
    ],
)
def test_crash_then_restart_delivers_each_message_at_most_once(local, sink, crash_at, ambiguous):
    for message_id in MESSAGES:
        local.enqueue(local.request(id=message_id, subject=message_id))

    crashed = run_process(local, crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    restarted = run_process(local)
    assert restarted.returncode == 0, restarted.stderr[-2000:]

    assert delivered_subjects(local) == Counter(MESSAGES), "each delivered exactly once"
    assert terminal_events(local) == Counter({(m, "alice@example.org"): 1 for m in MESSAGES})
    failures = local.events("event_type = 'failure'")
    assert {r["message_id"] for r in failures} == ambiguous
    assert all(r["reason"].startswith("ambiguous_handoff") for r in failures)
    assert not any((local.home / "inbox").glob("*.json"))
    assert not any((local.home / "batches").glob("*/*"))


@pytest.mark.parametrize(
    ("crash_at", "fewest", "most"),  # bounds on the number of ambiguous messages
    [
        ("after_claim", 0, 0),
        ("after_sign:3", 0, 3),  # m1 and m2 may still be on the wire
        ("after_handoff:2", 1, 3),  # the second to finish, and any still on the wire
        ("after_record:2", 0, 3),
        ("after_flush", 0, 0),
    ],
)
def test_crash_with_parallel_handoffs_never_delivers_twice(local, sink, crash_at, fewest, most):
    connections = 3
    for message_id in MESSAGES:
        local.enqueue(local.request(id=message_id, subject=message_id))

    crashed = run_process(local, crash_at, connections=connections)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    restarted = run_process(local, connections=connections)
    assert restarted.returncode == 0, restarted.stderr[-2000:]

    delivered = delivered_subjects(local)
    assert set(delivered.values()) <= {1}, "never delivered twice"
    assert terminal_events(local) == Counter({(m, "alice@example.org"): 1 for m in MESSAGES})
    failures = local.events("event_type = 'failure'")
    ambiguous = {r["message_id"] for r in failures}
    assert all(r["reason"].startswith("ambiguous_handoff") for r in failures)
    assert set(MESSAGES) - ambiguous <= set(delivered), "every other message is delivered"
    assert fewest <= len(ambiguous) <= most
    assert not any((local.home / "inbox").glob("*.json"))


@pytest.mark.parametrize("crash_at", ["after_sign:12", "after_handoff:12", "after_record:12"])
def test_crash_in_a_batch_the_workers_render_ahead_never_delivers_twice(local, sink, crash_at):
    """A batch large enough for the render workers commits each finished hand-off with the
    next one's start, so a crash may leave up to twice the connections ambiguous: never one
    sent twice, every other one delivered once."""
    connections, messages = 3, [f"big{n}" for n in range(1, 41)]  # POOL_MIN_MESSAGES is 32
    for message_id in messages:
        local.enqueue(local.request(id=message_id, subject=message_id))

    crashed = run_process(local, crash_at, connections=connections)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert run_process(local, connections=connections).returncode == 0

    delivered = delivered_subjects(local)
    assert set(delivered.values()) == {1}, "never delivered twice"
    assert terminal_events(local) == Counter({(m, "alice@example.org"): 1 for m in messages})
    ambiguous = {r["message_id"] for r in local.events("event_type = 'failure'")}
    assert set(messages) - ambiguous <= set(delivered), "every other message is delivered"
    assert len(ambiguous) <= 2 * connections
    assert len(delivered) >= 11  # what was recorded before the crash stays delivered


def test_crash_with_a_duplicate_enqueued_meanwhile(local, sink):
    for message_id in MESSAGES:
        local.enqueue(local.request(id=message_id, subject=message_id))
    assert run_process(local, "after_sign:3").returncode == -signal.SIGKILL
    local.enqueue(local.request(id="m3", subject="m3"))  # the client retries m3
    assert run_process(local).returncode == 0
    assert run_process(local).returncode == 0

    assert delivered_subjects(local) == Counter(MESSAGES)
    assert terminal_events(local) == Counter({(m, "alice@example.org"): 1 for m in MESSAGES})


def test_two_crashes_in_a_row_still_converge(local, sink):
    for message_id in MESSAGES:
        local.enqueue(local.request(id=message_id, subject=message_id))
    assert run_process(local, "after_record:1").returncode == -signal.SIGKILL
    assert run_process(local, "after_handoff:2").returncode == -signal.SIGKILL
    assert run_process(local).returncode == 0

    assert delivered_subjects(local) == Counter(MESSAGES)
    assert terminal_events(local) == Counter({(m, "alice@example.org"): 1 for m in MESSAGES})


def test_crash_under_a_daily_limit_charges_each_message_once_and_defers_the_rest(local, sink):
    """Killed after claiming three of five under a limit of three: the restart finishes those
    three (taken over, not charged again) and defers the other two; a duplicate sent meanwhile
    is dropped once the limit is raised and the batch retried."""
    for message_id in MESSAGES:
        local.enqueue(local.request(id=message_id, subject=message_id))

    assert run_process(local, "after_claim", limit_per_day="3").returncode == -signal.SIGKILL
    restarted = run_process(local, limit_per_day="3")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    summary = json.loads(restarted.stdout)
    assert (summary["delivered"], summary["deferred"]) == (3, 2)
    assert summary["deferred_by"] == {"per_day": 2}
    assert delivered_subjects(local) == Counter(MESSAGES[:3])
    assert len(list((local.home / "batches").glob("*/*.json"))) == 2, "the two wait"

    local.enqueue(local.request(id="m1", subject="m1"))  # the client retries m1 meanwhile
    assert run_process(local, command="retry").returncode == 0
    assert run_process(local, limit_per_day="10").returncode == 0

    assert delivered_subjects(local) == Counter(MESSAGES)
    assert terminal_events(local) == Counter({(m, "alice@example.org"): 1 for m in MESSAGES})
    assert not any((local.home / "batches").glob("*/*"))
