"""Soak: many messages through the local profile, checking that nothing leaks and nothing is lost.

    python -m benchmarks.soak [--messages 100000]

A driver process runs the delivery worker's loop (`run_worker`, its pipeline built by
`jobs.build_pipeline` from the local profile's resources: the folder inbox, the SQLite ledger,
DuckDB events, SMTP to `notify sink` on 127.0.0.1) while four client threads write the requests
into the inbox. The driver samples its own resident memory, open file descriptors and sockets
from `/proc/self` when it starts and after the batch that reaches 10%, 50% and 100% of the
messages (one sample per point: a batch that reaches two points gives both its count); a leak
shows as a column that grows between samples. Then every request must have
exactly one terminal event (`delivery`, `bounce`, `failure` or `reject`) in the events table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO,
    Deployment,
    request_body,
    request_id,
    request_name,
    sink_process,
    stop,
)
from benchmarks.pipeline import write_requests

PREFIX = "soak"
SAMPLE_FRACTIONS = (0.1, 0.5, 1.0)
TERMINAL = ("delivery", "bounce", "failure", "reject")


def run(messages: int) -> dict[str, Any]:
    """Deliver `messages` requests in a fresh deployment; returns the samples and the check."""
    with tempfile.TemporaryDirectory(prefix="notify-soak-") as tmp:
        return run_in(Path(tmp), messages)


def run_in(root: Path, messages: int) -> dict[str, Any]:
    """`run`, keeping the deployment (inbox, ledger, Maildir, events) under `root`."""
    deployment = Deployment.create(root, f"soak-{messages}")
    token = deployment.token()
    bodies = [(request_name(PREFIX, i), request_body(token, PREFIX, i)) for i in range(messages)]
    timeout = 300 + messages / 10
    with (root / "soak.log").open("ab") as log, sink_process(deployment, log):
        driver = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak", "--drive", "--messages", str(messages),
             "--timeout", str(timeout)],
            env=deployment.env, cwd=REPO, stdout=subprocess.PIPE, stderr=log,
        )
        watchdog = threading.Timer(timeout + 120, driver.kill)
        watchdog.start()
        try:
            assert driver.stdout is not None
            if driver.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"the soak driver did not start; see {root / 'soak.log'}")
            start = time.monotonic()
            write_requests(deployment.home, bodies)
            out = driver.stdout.read()
            if driver.wait() != 0:
                raise RuntimeError(f"the soak driver failed ({driver.returncode})")
            seconds = time.monotonic() - start
        finally:
            watchdog.cancel()
            stop(driver)
    drive = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "messages": messages,
        "samples": drive["samples"],
        "terminal_events_per_message": terminal_events_per_message(deployment, messages),
        "seconds": round(seconds, 3),
    }


def terminal_events_per_message(deployment: Deployment, messages: int) -> dict[str, int]:
    """How many of the requests have exactly one terminal event, none, or more than one."""
    import duckdb

    placeholders = ", ".join("?" for _ in TERMINAL)
    with duckdb.connect(str(deployment.home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT message_id, count(*) FROM notify_events.events"
            f" WHERE event_type IN ({placeholders}) GROUP BY message_id", list(TERMINAL),
        ).fetchall()
    found = Counter({str(message_id): int(n) for message_id, n in rows})
    per_message = [found[request_id(PREFIX, i)] for i in range(messages)]
    return {
        "exactly_one": sum(1 for n in per_message if n == 1),
        "none": sum(1 for n in per_message if n == 0),
        "more": sum(1 for n in per_message if n > 1),
    }


def sample(at: int) -> dict[str, Any]:
    """This process's resident memory, open file descriptors and sockets, from /proc."""
    rss_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fds = sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor that listed the folder, closed by now
            continue
        fds += 1
        sockets += target.startswith("socket:")
    return {"at": at, "rss_mb": round(rss_kb / 1024, 1), "open_fds": fds, "sockets": sockets}


def drive(messages: int, timeout: float) -> dict[str, Any]:
    """The driver process: the delivery worker's loop, warmed up, sampled, stopped when done."""
    import dagster as dg

    from notify_pipeline.jobs import build_pipeline
    from notify_pipeline.ledger.base import current_owner
    from notify_pipeline.profiles import resources_for
    from notify_pipeline.run import BatchSummary, Totals, run_worker
    from notify_pipeline.settings import Settings

    points = sorted({max(1, round(messages * f)) for f in SAMPLE_FRACTIONS})
    totals = Totals()
    done = threading.Event()
    samples: list[dict[str, Any]] = []

    def on_batch(summary: BatchSummary) -> None:
        totals.add_batch(summary)
        while points and totals.requests >= points[0]:
            points.pop(0)
            samples.append(sample(totals.requests))
        if totals.requests >= messages:
            done.set()

    with dg.build_resources(resources_for(Settings())) as r:
        def work(seconds: float, until: threading.Event) -> None:
            run_worker(
                inbox=r.inbox.open(), open_ledger=r.ledger.open,
                make_pipeline=lambda book: build_pipeline(
                    book, r.deployment, r.registry, r.identity, r.signing, r.transport),
                warehouse=r.warehouse.open(), owner=current_owner("soak-worker"),
                max_items=r.deployment.batch_max_size,
                max_age_seconds=r.deployment.batch_max_age_seconds,
                poll_seconds=r.deployment.worker_poll_seconds, max_seconds=seconds,
                stop=until, on_batch=on_batch,
            )

        work(0.5, threading.Event())  # warm up: imports, keys, an empty pass
        samples.append(sample(0))
        print("ready", flush=True)
        work(timeout, done)
    return {"requests": totals.requests, "delivered": totals.delivered, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    result = drive(args.messages, args.timeout) if args.drive else run(args.messages)
    print(json.dumps(result, indent=None if args.drive else 2), flush=True)


if __name__ == "__main__":
    main()
