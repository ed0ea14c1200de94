"""Cost of one flush into the DuckDB warehouse as its history grows (flat is the goal).

    python -m benchmarks.warehouse                                # 10,000 and 1,000,000 stored
    python -m benchmarks.warehouse --existing 10000 1000000 --keyed   # the old primary key too

For each size a fresh file is seeded in DuckDB's own SQL with that many events (ids as the
pipeline makes them: 32 hex digits), then a child process times `write_events` for a few
pipeline-sized batches (2,000 messages, three events each), each also carrying 500 events of
the previous batch, as a replayed flush does. Seeding and writing each run in a process of
their own (Linux hands a parent's peak RSS down to its children), so the writer's peak RSS is
its own.
`--keyed` measures the write this replaced, `INSERT OR IGNORE` into a table with a primary key
on `event_id`, for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from benchmarks.harness import machine
from notify_pipeline.events import EVENT_COLUMNS, Event, EventType, make_event_id
from notify_pipeline.warehouse.duckdb import COLUMNS, SCHEMA, DuckDBWarehouse

BATCH = 6000
REPLAYED = 500
AT = datetime(2026, 12, 1, tzinfo=UTC)
KINDS = (EventType.QUEUED, EventType.SEND, EventType.DELIVERY)


def seed(path: Path, existing: int, *, keyed: bool) -> None:
    """`existing` events of one service, in appended batches as the pipeline writes them."""
    columns = COLUMNS.replace("NOT NULL", "PRIMARY KEY", 1) if keyed else COLUMNS
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE SCHEMA {SCHEMA}")
        con.execute(f"CREATE TABLE {SCHEMA}.events ({columns})")
        con.execute(
            f"INSERT INTO {SCHEMA}.events SELECT md5('seed' || i), 'lookup-notices',"
            " 'm' || (i // 3), NULL, ['queued', 'send', 'delivery'][i % 3 + 1],"
            " 'r' || (i // 3) || '@example.org', $at, $at, NULL, NULL, NULL,"
            " 'Your weekly summary', '{}' FROM range($n) t(i)", {"at": AT, "n": existing})


def batch(number: int) -> list[Event]:
    """Batch `number`'s new events, after the last `REPLAYED` of the batch before."""
    first = number * BATCH - REPLAYED if number else 0
    return [
        Event(event_id=make_event_id("lookup-notices", f"b{i // 3}", KINDS[i % 3].value),
              service="lookup-notices", message_id=f"b{i // 3}", event_type=KINDS[i % 3],
              recipient=f"r{i // 3}@example.org", occurred_at=AT, subject="Your weekly summary")
        for i in range(first, (number + 1) * BATCH)
    ]


def write_keyed(path: Path, events: list[Event]) -> int:
    """The write this benchmark's subject replaced: `INSERT OR IGNORE` through the key."""
    frame = pd.DataFrame([e.row(AT) for e in events], columns=list(EVENT_COLUMNS))
    with duckdb.connect(str(path)) as con:
        con.register("incoming", frame)
        row = con.execute(f"INSERT OR IGNORE INTO {SCHEMA}.events"
                          " SELECT * FROM incoming").fetchone()
        return int(row[0]) if row else 0


def child(path: Path, batches: int, *, keyed: bool) -> dict[str, Any]:
    """Time each batch's write; runs in its own process so that its peak RSS is the writes'."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warehouse = DuckDBWarehouse(path)
    seconds, written = [], 0
    for number in range(batches):
        events = batch(number)
        start = time.perf_counter()
        written += write_keyed(path, events) if keyed else warehouse.write_events(events)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": [round(s, 4) for s in seconds], "written": written,
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1)}


def measure(workdir: Path, existing: int, batches: int, *, keyed: bool) -> dict[str, Any]:
    path = workdir / f"{'keyed' if keyed else 'keyless'}-{existing}.duckdb"
    path.unlink(missing_ok=True)
    keyed_flag = ["--keyed"] if keyed else []
    subprocess.run([sys.executable, "-m", "benchmarks.warehouse", "--seed", str(path),
                    "--existing", str(existing), *keyed_flag], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.warehouse", "--child", str(path),
         "--batches", str(batches), *keyed_flag],
        capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    expected = BATCH * batches
    return {"existing": existing, "schema": "primary key" if keyed else "keyless",
            "median_seconds": round(statistics.median(result["seconds"]), 4),
            "exact": result["written"] == expected, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--existing", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--keyed", action="store_true", help="also measure the old primary key")
    parser.add_argument("--seed", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        seed(args.seed, args.existing[0], keyed=args.keyed)
        return
    if args.child:
        print(json.dumps(child(args.child, args.batches, keyed=args.keyed)))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="notify-warehouse-") as tmp:
        for keyed in (False, True) if args.keyed else (False,):
            runs += [measure(Path(tmp), n, args.batches, keyed=keyed) for n in args.existing]
    print(json.dumps({"benchmark": "warehouse", "machine": machine(), "batch_events": BATCH,
                      "replayed_per_batch": REPLAYED, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
