"""Throughput of 1 and of 2 delivery workers over one inbox and one Postgres ledger.

    python -m benchmarks.workers --messages 3000

Each worker is `run_worker` (what a `delivery_worker` run executes) in a process of its own,
as each run is under Dagster; they share the local inbox, one Postgres ledger (a throwaway
cluster on 127.0.0.1, or `--ledger-dsn`) and the SMTP peer. Each writes events to a DuckDB file
of its own: DuckDB takes one writer process at a time, and production's BigQuery has no such
lock, so sharing one file would measure the local warehouse, not the workers. All requests wait
in the inbox before the workers start; the clock runs from their start signal until the last
one has found the inbox empty. Prints JSON: per worker count, messages a second, the CPU seconds
of the worker processes (from the start signal), of the peer and of Postgres, exactly-once, and
the machine's other load (the gain on 2 cores is bounded by the cores, and by whoever else uses
them).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from benchmarks.harness import (
    PEERS,
    REPO,
    SMTP_SINK_MISSING,
    Deployment,
    MachineShare,
    machine,
    peer_process,
    rate,
    request_body,
    request_name,
    smtp_sink_available,
    tree_cpu_seconds,
)

BATCH = 200
WORKER_TIMEOUT_SECONDS = 600.0


def child(dsn: str, schema: str, warehouse: str) -> None:
    """One worker: wait for "go" on stdin, work until the inbox is drained, print totals."""
    import dagster as dg

    from notify_pipeline.jobs import build_pipeline
    from notify_pipeline.ledger.base import current_owner
    from notify_pipeline.profiles import resources_for
    from notify_pipeline.resources import PostgresLedgerResource
    from notify_pipeline.run import run_worker
    from notify_pipeline.settings import Settings
    from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

    settings = Settings(batch_max_size=BATCH, batch_max_age_seconds=0)
    resources = {**resources_for(settings),
                 "ledger": PostgresLedgerResource(dsn=dsn, ledger_schema=schema)}
    with dg.build_resources(resources) as r:
        inbox, stop = r.inbox.open(), threading.Event()
        print("ready", flush=True)
        sys.stdin.readline()
        started, cpu_before = time.monotonic(), _cpu_seconds()

        def drained() -> None:
            while not stop.wait(0.2):
                if not inbox.waiting() and not inbox.batches():
                    stop.set()

        threading.Thread(target=drained, daemon=True).start()
        totals = run_worker(
            inbox=inbox, open_ledger=r.ledger.open, warehouse=DuckDBWarehouse(Path(warehouse)),
            make_pipeline=lambda book: build_pipeline(
                book, r.deployment, r.registry, r.identity, r.signing, r.transport),
            owner=current_owner(f"bench-{uuid.uuid4().hex[:8]}"), max_items=BATCH,
            max_age_seconds=0, poll_seconds=0.05, max_seconds=WORKER_TIMEOUT_SECONDS, stop=stop)
    print(json.dumps({**totals.as_dict(), "seconds": time.monotonic() - started,
                      "cpu_seconds": _cpu_seconds() - cpu_before}), flush=True)


def _cpu_seconds() -> float:
    """This process's CPU and its reaped children's (render workers), from the start."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


@contextmanager
def ledger_dsn(given: str | None) -> Any:
    """`given`, or a throwaway Postgres cluster's DSN (removed afterwards) and its server pid."""
    if given:
        yield given, None
        return
    from tests.conftest import free_port
    from tests.emulators.postgres import PostgresCluster

    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="notify-pg-")), free_port())
    try:
        cluster.start()
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        yield cluster.dsn, pid
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def measure(workers: int, messages: int, root: Path, dsn: str, postgres_pid: int | None,
            peer: str, log: IO[bytes]) -> dict[str, Any]:
    deployment = Deployment.create(root, f"workers-{workers}")
    token, inbox = deployment.token(), deployment.home / "inbox"
    inbox.mkdir()
    prefix = f"w{workers}"
    for i in range(messages):
        (inbox / request_name(prefix, i)).write_bytes(request_body(token, prefix, i))
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with peer_process(deployment, log, peer) as server, ExitStack() as procs:
        children = [procs.enter_context(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", "--child", dsn, schema,
             str(deployment.home / f"warehouse-{n}.duckdb")],
            cwd=REPO, env=deployment.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log, text=True)) for n in range(workers)]
        for proc in children:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        peer_before = server.cpu_seconds()
        pg_before = tree_cpu_seconds(postgres_pid) if postgres_pid else 0.0
        started = time.monotonic()
        for proc in children:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=WORKER_TIMEOUT_SECONDS + 60)[0] for proc in children]
        seconds = time.monotonic() - started
        peer_cpu = server.cpu_seconds() - peer_before
        pg_cpu = tree_cpu_seconds(postgres_pid) - pg_before if postgres_pid else None
        stored = server.exactly_once(prefix, messages)
    totals = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    worker_cpu = sum(t["cpu_seconds"] for t in totals)
    return {
        "workers": workers, "messages": messages, "seconds": round(seconds, 2),
        "per_second": rate(messages, seconds),
        "delivered_per_worker": [t["delivered"] for t in totals],
        "batches_per_worker": [t["batches"] for t in totals],
        "cpu_seconds": {"workers": round(worker_cpu, 1), "peer": round(peer_cpu, 1),
                        "postgres": None if pg_cpu is None else round(pg_cpu, 1)},
        "worker_cores_used": round(worker_cpu / seconds, 2),
        **stored,
    }


def run(messages: int, counts: list[int], peer: str, dsn: str | None,
        workdir: Path) -> dict[str, Any]:
    share = MachineShare()
    with (workdir / "benchmark.log").open("ab") as log, ledger_dsn(dsn) as (url, pid):
        results = [measure(n, messages, workdir, url, pid, peer, log) for n in counts]
    by_count = {r["workers"]: r for r in results}
    ratios = {f"{n}/1": round(by_count[n]["per_second"] / by_count[1]["per_second"], 2)
              for n in by_count if n != 1 and 1 in by_count}
    return {"benchmark": "workers", "messages": messages, "peer": peer, "machine": machine(),
            "runs": results, "throughput_ratios": ratios, "machine_share": share.finish()}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--peer", choices=PEERS, default="c" if smtp_sink_available() else "python",
                        help="c: Postfix's smtp-sink (when installed); python: `notify sink`")
    parser.add_argument("--ledger-dsn", help="an existing Postgres (default: a throwaway one)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    if args.peer == "c" and not smtp_sink_available():
        sys.exit(SMTP_SINK_MISSING)
    with tempfile.TemporaryDirectory(prefix="notify-workers-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.messages, args.workers, args.peer, args.ledger_dsn, workdir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
