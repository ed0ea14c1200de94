"""Latency at light load through the real daemon path, with the default deployment settings.

    python -m benchmarks.latency [--quick] [--rate 1.0] [--seconds 300]

Starts `notify up` exactly as a user does (the SMTP sink plus `dagster dev`: webserver, daemon,
code server), waits for the UI and for the `delivery_worker` run the default deployment keeps
going, delivers one warm-up request, then enqueues one request per
second (`--quick`: for 30 s instead of 5 minutes) with `LocalInbox.write_request`. Latency is
from just before the request is written to the moment the sink accepted the message: the mtime
of its Maildir file, which the sink writes just before its fsync and its 250 reply.
Prints p50/p95/p99 as JSON. `notify up` and every process it started are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO,
    Deployment,
    MachineShare,
    envelope_recipients,
    free_port,
    machine,
    maildir_files,
    recipient,
    request_body,
    request_name,
    session_members,
)

PATH = "`notify up` (sink + dagster dev: daemon, code server, sensors and the runs they launch)"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def ui_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def stop_up(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM as a user's service manager would; then make sure every process is gone."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=90)
    deadline = time.monotonic() + 30
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def worker_started(dagster_home: Path) -> bool:
    """True once a `delivery_worker` run is running its loop (it has tagged itself)."""
    import dagster as dg

    from notify_pipeline.jobs import OWNER_TAG

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="delivery_worker",
                                               statuses=[dg.DagsterRunStatus.STARTED]))
        return any(OWNER_TAG in run.tags for run in runs)


def runs_by_job(dagster_home: Path) -> dict[str, int]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        counts: dict[str, int] = {}
        for run in instance.get_runs():
            counts[run.job_name] = counts.get(run.job_name, 0) + 1
        return counts


def accepted_at(mail_dir: Path) -> dict[str, float]:
    """Recipient -> when the sink stored the message carrying it (file mtime)."""
    return {r: path.stat().st_mtime for path in maildir_files(mail_dir)
            for r in envelope_recipients(path)}


def run(seconds: float, per_second: float, workdir: Path) -> dict[str, Any]:
    from notify_pipeline.inbox.local import LocalInbox

    deployment = Deployment.create(workdir, "latency")
    dagster_home = deployment.home / "dagster"
    ui_port = free_port()
    count = max(1, round(seconds * per_second))
    share = MachineShare()
    with (workdir / "up.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "notify_pipeline.cli", "up", "--port", str(ui_port)],
            cwd=REPO, env=deployment.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            started = time.monotonic()
            wait_for(lambda: ui_ready(ui_port), 180, "the Dagster UI")
            ui_seconds = time.monotonic() - started
            # The default deployment delivers through the delivery_worker run: measure that.
            wait_for(lambda: worker_started(dagster_home), 300, "the delivery worker run")
            worker_seconds = time.monotonic() - started
            token = deployment.token()
            inbox = LocalInbox(deployment.home)
            inbox.write_request(request_body(token, "warm", 0), request_name("warm", 0))
            wait_for(lambda: recipient("warm", 0) in accepted_at(deployment.mail_dir), 300,
                     "the warm-up message")
            enqueued: dict[str, float] = {}
            begin = time.time()
            for i in range(count):
                time.sleep(max(0.0, begin + i / per_second - time.time()))
                enqueued[recipient("lat", i)] = time.time()
                inbox.write_request(request_body(token, "lat", i), request_name("lat", i))
            wait_for(lambda: len(accepted_at(deployment.mail_dir)) >= count + 1, 180,
                     "every message to be delivered")
        finally:
            stop_up(proc)
    runs = runs_by_job(dagster_home)
    accepted = accepted_at(deployment.mail_dir)
    latencies = sorted(accepted[r] - t for r, t in enqueued.items() if r in accepted)
    return {
        "benchmark": "latency",
        "path": PATH,
        "settings": "defaults (Settings(), notify up's generated dagster.yaml)",
        "machine": machine(),
        "rate_per_second": per_second,
        "messages": count,
        "delivered": len(latencies),
        "dagster_ui_ready_seconds": round(ui_seconds, 1),
        "worker_started_seconds": round(worker_seconds, 1),
        "runs": runs,
        "batches": _batches(deployment.home / "ledger.sqlite3"),
        "latency_seconds": _summary(latencies),
        "machine_share": share.finish(),
    }


def _summary(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"p50": latencies[0], "p95": latencies[0], "p99": latencies[0]} if latencies else {}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 3), "p95": round(cuts[94], 3), "p99": round(cuts[98], 3),
        "min": round(latencies[0], 3), "max": round(latencies[-1], 3),
        "mean": round(statistics.fmean(latencies), 3),
    }


def _batches(ledger: Path) -> int:
    """Batch attempts the ledger recorded: one per `deliver_batch` run."""
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as con:
        row = con.execute("SELECT coalesce(sum(attempts), 0) FROM batches").fetchone()
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 seconds instead of 5 minutes")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    seconds = args.seconds or (30.0 if args.quick else 300.0)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(seconds, args.rate, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="notify-latency-") as tmp:
            result = run(seconds, args.rate, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
