"""Smoke test of the analytics benchmark: a small run, its JSON, and that the incremental
refresh left exactly what a full rebuild gives. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_analytics_benchmark_runs_and_incremental_equals_full():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.analytics", "--events", "20000",
         "--rss-events", "20000"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    incremental = result["incremental"]
    assert incremental["matches_full_rebuild"] is True
    assert incremental["full"]["days_recomputed"] == 20 * 91
    assert 0 < incremental["incremental"]["days_recomputed"] < 20 * 91
    assert result["memory"]["peak_rss_mb"] > 0
    assert set(result["goals"]) == {"incremental_at_most_10_percent", "peak_rss_at_most_500_mb"}
