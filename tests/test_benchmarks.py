"""Smoke test of the throughput benchmark: a tiny run, its JSON shape, and exactly-once delivery.

No timing is asserted: the numbers depend on the machine. The Maildirs are counted here, not
taken from the benchmark's own report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import duckdb
import pytest

from benchmarks import warehouse as warehouse_benchmark
from benchmarks.harness import envelope_recipients, maildir_files, recipient
from tests.helpers import REPO

pytestmark = pytest.mark.slow

MESSAGES = 20


def test_e2e_benchmark_delivers_every_message_once_and_reports_ratios(tmp_path):
    """With the project's own sink as the peer, so the test needs no Postfix."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.e2e", "--messages", str(MESSAGES), "--quick",
         "--peer", "python", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    assert {"machine", "limit", "floor", "naive", "pipeline", "ratios",
            "machine_share"} <= result.keys()
    assert {"pipeline/limit", "pipeline/floor", "pipeline/naive"} <= set(result["ratios"])
    [only] = result["rounds"]  # --quick: one round of the floor and the pipeline
    assert only["chosen"] and only["first"] == "floor"
    assert only["pipeline/floor"] == result["ratios"]["pipeline/floor"]
    assert only["floor"] == result["floor"]["per_second"]
    for part in (result["limit"], result["floor"], result["naive"], result["pipeline"],
                 result["pipeline_per_batch_runs"], result["pipeline_arriving"]):
        assert part["per_second"] > 0
    limits = result["limit"]
    terms = limits["cpu_ms_per_message"]
    assert terms["rsa"] > 0 and terms["peer"] > 0 and terms["client"] > 0
    assert limits["per_second"] == pytest.approx(
        limits["cores"] * 1000 / (terms["rsa"] + terms["peer"] + terms["client"]), rel=0.01)
    assert limits["rsa2048_signatures_all_cores"]["per_second"] > 0
    assert limits["peer_accept"]["accept_per_second"] > 0
    for part in ("floor", "naive"):
        assert result[part]["cpu_ms_per_message"]["sender"] > 0
    for path in ("pipeline", "pipeline_per_batch_runs", "pipeline_arriving"):
        assert result[path]["events"]["delivery"] == MESSAGES
        cpu = result[path]["cpu_seconds"]
        assert cpu["tree"] >= cpu["driver"] > 0
        assert result[path]["cpu_ms_per_message"]["tree"] > 0
    assert result["pipeline"]["path"] == "worker"
    assert result["pipeline_per_batch_runs"]["path"] == "runs"
    # like the floor's, the compared pipeline parts' requests are all on disk when the clock starts
    assert result["pipeline"]["start"] == result["pipeline_per_batch_runs"]["start"] == "waiting"
    assert result["pipeline_arriving"]["start"] == "arriving"
    assert result["pipeline_arriving"]["path"] == "worker"
    assert {"pipeline_arriving/floor", "pipeline_arriving/limit"} <= set(result["ratios"])
    assert "stage_seconds" in result["pipeline"]
    assert result["pipeline"]["peak_rss_mb"] > 0

    for folder, prefix in (("limit-python", "limitpython"), ("floor", "floor"),
                           ("naive", "naive"), (f"pipeline-worker-{MESSAGES}", "pipe"),
                           (f"pipeline-runs-{MESSAGES}", "runs"),
                           (f"pipeline-arriving-{MESSAGES}", "live")):
        counts = Counter(r for path in maildir_files(tmp_path / folder / "mail")
                         for r in envelope_recipients(path))
        assert counts == Counter({recipient(prefix, i): 1 for i in range(MESSAGES)}), folder


def test_e2e_benchmark_without_smtp_sink_says_how_to_install_it(tmp_path):
    env = {**os.environ, "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", "import benchmarks.harness as h, runpy, sys;"
         " h.SMTP_SINK = '/nonexistent/smtp-sink';"
         " sys.argv = ['e2e', '--messages', '1', '--workdir', sys.argv[1]];"
         " runpy.run_module('benchmarks.e2e', run_name='__main__')", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode != 0
    assert "apt-get install postfix" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing was measured



@pytest.mark.parametrize("keyed", [False, True])
def test_warehouse_benchmark_writes_each_batch_exactly_once(tmp_path, keyed):
    """In process (the benchmark's own child and seed steps), to stay quick."""
    path = tmp_path / "w.duckdb"
    warehouse_benchmark.seed(path, 2000, keyed=keyed)
    result = warehouse_benchmark.child(path, 2, keyed=keyed)
    assert result["written"] == 2 * warehouse_benchmark.BATCH  # the replayed 500 not again
    assert len(result["seconds"]) == 2 and result["peak_rss_mb"] > 0
    with duckdb.connect(str(path)) as con:
        [(rows, ids)] = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM notify_events.events").fetchall()
    assert rows == ids == 2000 + 2 * warehouse_benchmark.BATCH
