"""Smoke test of the throughput benchmark: a tiny run, its JSON shape, and exactly-once delivery.

No timing is asserted: the numbers depend on the machine. The Maildirs are counted here, not
taken from the benchmark's own report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from benchmarks.harness import envelope_recipients, maildir_files, recipient
from tests.helpers import REPO

pytestmark = pytest.mark.slow

MESSAGES = 20


def test_e2e_benchmark_delivers_every_message_once_and_reports_ratios(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.e2e", "--messages", str(MESSAGES), "--quick",
         "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    assert {"machine", "naive", "limit", "pipeline", "ratios"} <= result.keys()
    assert {"pipeline/naive", "pipeline/limit"} <= set(result["ratios"])
    for part in (result["naive"], result["limit"], result["pipeline"],
                 result["pipeline_per_batch_runs"]):
        assert part["per_second"] > 0
    limits = result["limit"]
    assert {"rsa2048_signatures_all_cores", "smtp_sink_accept",
            "smtp_sink_accept_parallel"} <= limits.keys()
    best_sink = max(limits["smtp_sink_accept"]["per_second"],
                    limits["smtp_sink_accept_parallel"]["per_second"])
    assert limits["per_second"] == min(best_sink,
                                       limits["rsa2048_signatures_all_cores"]["per_second"])
    connections = limits["smtp_sink_accept_parallel"]["connections"]
    assert "stage_seconds" in result["pipeline"]
    assert result["pipeline"]["peak_rss_mb"] > 0
    assert result["pipeline"]["path"] == "worker"
    assert result["pipeline_per_batch_runs"]["path"] == "runs"
    for path in ("pipeline", "pipeline_per_batch_runs"):
        assert result[path]["events"]["delivery"] == MESSAGES

    for folder, prefix in (("naive", "naive"), ("limit-1", "limit1"),
                           (f"limit-{connections}", f"limit{connections}"),
                           (f"pipeline-worker-{MESSAGES}", "pipe"),
                           (f"pipeline-runs-{MESSAGES}", "runs")):
        counts = Counter(r for path in maildir_files(tmp_path / folder / "mail")
                         for r in envelope_recipients(path))
        assert counts == Counter({recipient(prefix, i): 1 for i in range(MESSAGES)}), folder
