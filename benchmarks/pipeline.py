"""The pipeline end to end, on either of its two run models.

A driver process (this module run with `--drive`) delivers the requests:
- `--path worker` (the default deployment): the `delivery_worker` run's own loop,
  `notify_pipeline.run.run_worker`, with its pipeline built by `jobs.build_pipeline` from the
  profile's resources. It stages the inbox, runs each ready batch (parse, authenticate, policy,
  claim, render, sign, SMTP hand-off, ledger) and writes its events into DuckDB after each one.
  Dagster's own cost here is one run start an hour, which the driver's warm-up stands for.
- `--path runs` (`notify process`, and the fallback when no worker runs):
  `notify_pipeline.cli.process_once` in a loop; each call evaluates the real `inbox_sensor` and
  executes every `deliver_batch` run it asks for with `execute_in_process` on an ephemeral
  Dagster instance.
Per-stage seconds are the batches' `stage_seconds`, summed. CPU is the driver's whole process
tree (the driver, its render workers, and anything else it started) from `ready` to the end,
read in the driver while its workers still live, each with the CPU of the children it reaped.

The driver is started and warmed up (imports, one empty pass) before the clock starts, as a
running service would be. Four client threads in the parent write the requests into the inbox
(`LocalInbox.write_request`, fsync per request), and `start` says when:
- `waiting`: all of them before the clock starts, then the driver is told to go. The pipeline
  starts from the state the floor and the naive loop start from (every request on disk), so
  their rates compare like with like.
- `arriving`: while the driver drains the inbox, the clock starting at the first write. The
  clients' writes and fsyncs (about 0.4 ms of CPU a request) then share the cores with the
  pipeline, and batches are cut as requests arrive.
The clock stops at the last event's `recorded_at` in DuckDB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import psutil

from benchmarks.harness import (
    REPO,
    Deployment,
    descendants_cpu_seconds,
    ms_per_message,
    peer_process,
    rate,
    request_body,
    request_name,
    stop,
)

MACHINERY = {
    "worker": (
        "the delivery_worker run's loop (notify_pipeline.run.run_worker, its pipeline built by"
        " jobs.build_pipeline from the profile's resources), as the default deployment runs it:"
        " stage, decide, claim, render, sign, SMTP hand-off, ledger, events into DuckDB after"
        " each batch"
    ),
    "runs": (
        "notify_pipeline.cli.process_once in a loop (the `notify process` path: real inbox_sensor,"
        " one deliver_batch run per batch via execute_in_process, ephemeral instance)"
    ),
}
WRITER_THREADS = 4
STARTS = {
    "waiting": f"all written by {WRITER_THREADS} client threads before the clock starts",
    "arriving": f"requests are written by {WRITER_THREADS} client threads while the pipeline"
                " drains them, and the clock starts at the first write",
}


def measure(
    root: Path, messages: int, log: IO[bytes], *, path: str = "worker", prefix: str = "pipe",
    peer: str = "python", name: str | None = None, start: str = "arriving",
) -> dict[str, Any]:
    """Deliver `messages` requests through the pipeline on `path` (`worker`: the default
    deployment's delivery worker run; `runs`: a run per batch) to `peer` (`c`: smtp-sink,
    `python`: the project's sink), in the deployment folder `name` under `root`, the requests
    written as `start` says (see `STARTS`); returns rates, stages, CPU, memory."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {sorted(STARTS)}, not {start!r}")
    waiting = start == "waiting"
    deployment = Deployment.create(root, name or f"pipeline-{path}-{messages}")
    token = deployment.token()
    bodies = [(request_name(prefix, i), request_body(token, prefix, i)) for i in range(messages)]
    timeout = 300 + messages / 10
    with peer_process(deployment, log, peer) as server:
        peer_before = server.cpu_seconds()
        driver = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pipeline", "--drive", "--path", path,
             "--messages", str(messages), "--timeout", str(timeout),
             *(["--wait-for-go"] if waiting else [])],
            env=deployment.env, cwd=REPO, stdin=subprocess.PIPE if waiting else None,
            stdout=subprocess.PIPE, stderr=log,
        )
        watchdog = threading.Timer(timeout + 120, driver.kill)
        watchdog.start()
        memory = TreeMemory(driver.pid)
        try:
            assert driver.stdout is not None
            if driver.stdout.readline().strip() != b"ready":
                raise RuntimeError("the pipeline driver did not start; see the log")
            began, last = write_requests(deployment.home, bodies)
            first = _go(driver) if waiting else began
            out = driver.stdout.read()
            if driver.wait() != 0:
                raise RuntimeError(f"the pipeline driver failed ({driver.returncode})")
        finally:
            memory.stop()
            watchdog.cancel()
            stop(driver)
        peer_cpu = server.cpu_seconds() - peer_before
        stored = server.exactly_once(prefix, messages)
    drive = json.loads(out.decode().strip().splitlines()[-1])
    events = _events(deployment)
    seconds = events["last_recorded_at"] - first
    return {
        "path": path,
        "machinery": MACHINERY[path],
        "messages": messages,
        "seconds": round(seconds, 3),
        "per_second": rate(drive["delivered"], seconds),
        "start": start,
        "how_requests_arrive": STARTS[start],
        "enqueue_seconds": round(last - began, 3),
        "delivered": drive["delivered"],
        "events": events["by_type"],
        **stored,
        "runs": drive["runs"],
        "stage_seconds": drive["stage_seconds"],
        "cpu_seconds": {"tree": drive["cpu_seconds"], "driver": drive["driver_cpu_seconds"],
                        "workers": round(drive["cpu_seconds"] - drive["driver_cpu_seconds"], 2),
                        "peer": round(peer_cpu, 2)},
        "cpu_ms_per_message": {
            "tree": ms_per_message(drive["cpu_seconds"], messages),
            "driver": ms_per_message(drive["driver_cpu_seconds"], messages),
            "workers": ms_per_message(drive["cpu_seconds"] - drive["driver_cpu_seconds"],
                                      messages),
            "peer": ms_per_message(peer_cpu, messages),
        },
        "peak_rss_mb": drive["peak_rss_mb"],
        "peak_tree_rss_mb": round(max(memory.peak, drive["peak_rss_mb"] * 2**20) / 2**20, 1),
    }


class TreeMemory:
    """Samples the summed RSS of a process and its descendants (shared pages count per process).

    `ru_maxrss` is exact for one process but says nothing useful about forked children (it
    includes the pages they share with their parent), hence sampling for the whole tree.
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.peak = 0
        self._root = psutil.Process(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._done.wait(interval):
            try:
                tree = [self._root, *self._root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                continue
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _go(driver: subprocess.Popen[bytes]) -> float:
    """Tell a driver waiting with every request written to start; returns when it was told."""
    assert driver.stdin is not None
    told = time.time()
    driver.stdin.write(b"go\n")
    driver.stdin.close()
    return told


def write_requests(home: Path, bodies: list[tuple[str, bytes]]) -> tuple[float, float]:
    """Write every request as clients would; returns (first write began, last write ended)."""
    from notify_pipeline.inbox.local import LocalInbox

    inbox = LocalInbox(home)
    first = time.time()

    def client(k: int) -> None:
        for name, body in bodies[k::WRITER_THREADS]:
            inbox.write_request(body, name)

    with ThreadPoolExecutor(WRITER_THREADS) as pool:
        list(pool.map(client, range(WRITER_THREADS)))
    return first, time.time()


def _events(deployment: Deployment) -> dict[str, Any]:
    import duckdb

    path = deployment.home / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        by_type = dict(con.execute(
            "SELECT event_type, count(*) FROM notify_events.events GROUP BY 1 ORDER BY 1"
        ).fetchall())
        row = con.execute("SELECT max(recorded_at) FROM notify_events.events").fetchone()
    assert row is not None and row[0] is not None, "no events were recorded"
    return {"by_type": by_type, "last_recorded_at": row[0].timestamp()}


def drive_worker(messages: int, timeout: float, wait_for_go: bool) -> dict[str, Any]:
    """The driver process on the worker path: the `delivery_worker` run's loop (`run_worker`,
    its pipeline built by `jobs.build_pipeline` from the profile's resources), started and
    warmed up, then stopped once every request is done."""
    import threading

    import dagster as dg

    from notify_pipeline.jobs import build_pipeline
    from notify_pipeline.ledger.base import current_owner
    from notify_pipeline.profiles import resources_for
    from notify_pipeline.run import BatchSummary, Totals, run_worker
    from notify_pipeline.settings import Settings

    settings = Settings()
    totals = Totals()
    stop = threading.Event()

    def on_batch(summary: BatchSummary) -> None:
        totals.add_batch(summary)
        if totals.requests >= messages:
            stop.set()

    with dg.build_resources(resources_for(settings)) as r:
        def work(seconds: float, until: threading.Event) -> None:
            run_worker(
                inbox=r.inbox.open(), open_ledger=r.ledger.open,
                make_pipeline=lambda book: build_pipeline(
                    book, r.deployment, r.registry, r.identity, r.signing, r.transport),
                warehouse=r.warehouse.open(), owner=current_owner("benchmark-worker"),
                max_items=r.deployment.batch_max_size,
                max_age_seconds=r.deployment.batch_max_age_seconds,
                poll_seconds=r.deployment.worker_poll_seconds, max_seconds=seconds,
                stop=until, on_batch=on_batch,
            )

        work(0.5, threading.Event())  # warm up: imports, keys, an empty pass
        baseline = _ready(wait_for_go)
        work(timeout, stop)
        _wait_for_removals()  # the last batch's files go in the background: count it
        return _drive_result(totals, baseline)


def drive(messages: int, timeout: float, wait_for_go: bool) -> dict[str, Any]:
    """The driver process: warm up, say `ready`, then drain until every request is done."""
    from notify_pipeline.cli import process_once
    from notify_pipeline.run import Counts, Totals
    from notify_pipeline.settings import Settings

    settings = Settings()
    process_once(settings)
    baseline = _ready(wait_for_go)
    totals = Totals()
    deadline = time.monotonic() + timeout
    while totals.requests < messages and time.monotonic() < deadline:
        summary = process_once(settings)
        totals.add(Counts.from_counts(summary))
        totals.batches += summary["batches"]
        if not summary["requests"]:
            time.sleep(0.05)
    _wait_for_removals()
    return _drive_result(totals, baseline)


def _ready(wait_for_go: bool) -> _Cpu:
    """Say `ready`; if asked to, wait for `go` (the requests are then all written). Returns the
    CPU baseline, taken as the clock starts."""
    print("ready", flush=True)
    if wait_for_go and sys.stdin.readline().strip() != "go":
        raise RuntimeError("the benchmark ended before it said go")
    return _Cpu()


REMOVAL_WAIT_SECONDS = 120.0


def _wait_for_removals() -> None:
    """Wait for the finished batches' removal, or fail the run plainly if it never ends."""
    from notify_pipeline.inbox.local import wait_for_removals

    if not wait_for_removals(REMOVAL_WAIT_SECONDS):
        raise RuntimeError(f"finished batches were still being removed after"
                           f" {REMOVAL_WAIT_SECONDS:.0f} s")


class _Cpu:
    """The driver's own CPU and its whole process tree's, now."""

    def __init__(self) -> None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.driver = own.ru_utime + own.ru_stime
        self.tree = (self.driver + reaped.ru_utime + reaped.ru_stime
                     + descendants_cpu_seconds(os.getpid()))


def _drive_result(totals: Any, baseline: _Cpu) -> dict[str, Any]:
    now = _Cpu()
    return {
        "delivered": totals.delivered,
        "requests": totals.requests,
        "runs": totals.batches,
        "stage_seconds": {stage: round(s, 3) for stage, s in sorted(totals.stage_seconds.items())},
        "cpu_seconds": round(now.tree - baseline.tree, 2),
        "driver_cpu_seconds": round(now.driver - baseline.driver, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--drive", action="store_true", help="be the driver process")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--path", choices=sorted(MACHINERY), default="worker")
    parser.add_argument("--wait-for-go", action="store_true",
                        help="after `ready`, start only when `go` arrives on stdin")
    args = parser.parse_args()
    if not args.drive:
        parser.error("run `python -m benchmarks.e2e` or `python -m benchmarks.memory`")
    driver = drive_worker if args.path == "worker" else drive
    print(json.dumps(driver(args.messages, args.timeout, args.wait_for_go)), flush=True)


if __name__ == "__main__":
    main()
