"""The soak benchmark, small: its JSON shape, its sample points, and one terminal event per request.

No resource figures are asserted (they depend on the machine); the Maildir is counted here,
not taken from the benchmark's own report.
"""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks import soak
from benchmarks.harness import envelope_recipients, maildir_files, recipient

pytestmark = pytest.mark.slow

MESSAGES = 300


def test_soak_gives_every_request_one_terminal_event_and_samples_at_its_points(tmp_path):
    result = soak.run_in(tmp_path, MESSAGES)

    assert set(result) == {"messages", "samples", "terminal_events_per_message", "seconds"}
    assert result["messages"] == MESSAGES
    assert result["terminal_events_per_message"] == {"exactly_one": MESSAGES, "none": 0,
                                                     "more": 0}
    assert result["seconds"] > 0
    samples = result["samples"]
    assert samples[0]["at"] == 0
    # one sample after the batch that reaches each of 10%, 50% and 100% (one batch may reach
    # several: they then share its count)
    points = [30, 150, 300]
    assert len(samples) == 1 + len(points)
    assert samples[-1]["at"] == MESSAGES
    for point, s in zip(points, samples[1:], strict=True):
        assert s["at"] >= point
    for s in samples:
        assert set(s) == {"at", "rss_mb", "open_fds", "sockets"}
        assert s["rss_mb"] > 0 and s["open_fds"] > 0 and s["sockets"] >= 0

    counts = Counter(r for path in maildir_files(tmp_path / f"soak-{MESSAGES}" / "mail")
                     for r in envelope_recipients(path))
    assert counts == Counter({recipient(soak.PREFIX, i): 1 for i in range(MESSAGES)})
