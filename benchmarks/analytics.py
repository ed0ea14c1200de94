"""Cost of the analytics SQL: a full rebuild of `daily_stats` and `bounce_rates` against an
incremental refresh after 1% more events, and peak memory while computing rates.

    python -m benchmarks.analytics                       # 1,000,000 events; 10,000,000 for RSS
    python -m benchmarks.analytics --events 100000 --rss-events 200000   # a quick run

Events are seeded in DuckDB's own SQL (20 services, 90 days, each recorded an hour after it
occurred and appended in that order, as the table is). The new 1% are recorded later: today's
and yesterday's traffic, and permanent bounces arriving late for messages of the past week.
Over the large history an incremental refresh with as many new events as the 1% of the default
run is timed too: its cost should not depend on the history behind it. Goals: incremental <= 10%
of full; peak RSS <= 500 MB while rates are computed over the large history (in a child process
that only computes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import machine
from notify_pipeline.analytics.duckdb_store import DuckDBAnalytics
from notify_pipeline.registry import AlertThresholds
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse

SERVICES = [f"svc-{n:02d}" for n in range(20)]
DAYS = 90
NOW = datetime(2026, 11, 30, 18, tzinfo=UTC)
# New events of an incremental refresh over the large history too: as many as the 1% of the
# default 1,000,000, so the two refreshes differ only in the history behind them.
SAME_NEW_EVENTS = 10_000

# event type by (i // 20) % 100, so every service gets the same mix: 60 send, 30 delivery,
# 4 permanent and 2 transient bounces, 1 complaint, 3 delay. Every row is its own recipient.
_KIND = ("CASE WHEN (i // 20) % 100 < 60 THEN 'send' WHEN (i // 20) % 100 < 90 THEN 'delivery'"
         " WHEN (i // 20) % 100 < 96 THEN 'bounce' WHEN (i // 20) % 100 < 97 THEN 'complaint'"
         " ELSE 'delivery_delay' END")
_BOUNCE = ("CASE WHEN (i // 20) % 100 BETWEEN 90 AND 93 THEN 'Permanent'"
           " WHEN (i // 20) % 100 BETWEEN 94 AND 95 THEN 'Transient' END")


def seed(warehouse: DuckDBWarehouse, n: int, *, start: int, first: datetime, span: timedelta,
         recorded: datetime | None = None, late_bounces: bool = False) -> None:
    """`n` events numbered from `start`, occurring in order over `span` from `first` and
    appended in that order, as the append-only table is; recorded an hour after they occurred,
    or all at `recorded`. `late_bounces`: every one is a permanent bounce."""
    step_us = span / timedelta(microseconds=1) / max(n, 1)
    occurred = f"$first + to_microseconds(CAST((i - $start) * {step_us} AS BIGINT))"
    recorded_sql = "$recorded" if recorded else f"{occurred} + INTERVAL 1 HOUR"
    kind, bounce = ("'bounce'", "'Permanent'") if late_bounces else (_KIND, _BOUNCE)
    params: dict[str, Any] = {"services": SERVICES, "start": start, "end": start + n,
                              "first": first}
    if recorded:
        params["recorded"] = recorded
    with warehouse.connect() as con:
        con.execute(
            "INSERT INTO notify_events.events"
            f" SELECT 'e' || i, $services[1 + i % 20], 'm' || i, NULL, {kind},"
            f" 'r' || i || '@example.org', {occurred}, {recorded_sql}, {bounce}, NULL, NULL,"
            " 'Subject', '{}' FROM range($start, $end) t(i)", params)


def seed_history(warehouse: DuckDBWarehouse, n: int) -> None:
    seed(warehouse, n, start=0, first=NOW - timedelta(days=DAYS), span=timedelta(days=DAYS))


def seed_new(warehouse: DuckDBWarehouse, n: int, start: int) -> None:
    """Today's and yesterday's traffic (90%), and permanent bounces arriving late for messages
    of the past week (10%), all recorded after the previous refresh."""
    recorded = NOW + timedelta(hours=1)
    late = n // 10
    seed(warehouse, n - late, start=start, first=NOW - timedelta(days=2),
         span=timedelta(days=2), recorded=recorded)
    seed(warehouse, late, start=start + n - late, first=NOW - timedelta(days=7),
         span=timedelta(days=7), recorded=recorded, late_bounces=True)


def refresh_all(store: DuckDBAnalytics) -> dict[str, Any]:
    """`daily_stats` then `bounce_rates` for every service at once, timed on one connection
    (what a refresh costs in SQL). Opening the file is timed apart: it costs the same whatever
    the refresh does, as does a Dagster run's own start-up."""
    began = time.perf_counter()
    with store.session():
        opened = time.perf_counter()
        refreshes = store.refresh_daily_stats_of(SERVICES)
        store.compute_rates_of(NOW.date(), dict.fromkeys(SERVICES, AlertThresholds()))
        done = time.perf_counter()
    return {"seconds": round(done - opened, 4), "connect_seconds": round(opened - began, 4),
            "days_recomputed": sum(len(r.days) for r in refreshes.values())}


def incremental(workdir: Path, events: int) -> dict[str, Any]:
    warehouse = DuckDBWarehouse(workdir / "incremental.duckdb")
    warehouse.ensure_schema()
    seed_history(warehouse, events)
    store = DuckDBAnalytics(warehouse)
    store.ensure_tables()
    full = refresh_all(store)
    more = events // 100
    seed_new(warehouse, more, events)
    step = refresh_all(store)
    rebuilt = _rebuilt_from_scratch(warehouse)
    return {"events": events, "new_events": more, "full": full, "incremental": step,
            "incremental/full": round(step["seconds"] / full["seconds"], 3),
            "matches_full_rebuild": rebuilt == _daily(warehouse)}


def _daily(warehouse: DuckDBWarehouse) -> list[tuple[Any, ...]]:
    return warehouse.query("SELECT * FROM notify_events.daily_stats ORDER BY service, day")


def _rebuilt_from_scratch(warehouse: DuckDBWarehouse) -> list[tuple[Any, ...]]:
    """What a full rebuild gives now, to prove the incremental refresh equals it."""
    with warehouse.connect() as con:
        con.execute("CREATE OR REPLACE TABLE notify_events.saved AS"
                    " SELECT * FROM notify_events.daily_stats")
        con.execute("DELETE FROM notify_events.daily_stats")
        con.execute("DELETE FROM notify_events.analytics_watermarks")
    DuckDBAnalytics(warehouse).refresh_daily_stats_of(SERVICES)
    rebuilt = _daily(warehouse)
    with warehouse.connect() as con:
        con.execute("DELETE FROM notify_events.daily_stats")
        con.execute("INSERT INTO notify_events.daily_stats SELECT * FROM notify_events.saved")
        con.execute("DROP TABLE notify_events.saved")
    return rebuilt


def peak_rss(workdir: Path, events: int) -> dict[str, Any]:
    """Full and incremental refreshes over a large history, each in a child process that only
    computes and reports its own peak RSS (VmHWM: the high-water mark of its address space
    since exec, so the seeding parent's memory is not counted)."""
    path = workdir / "rss.duckdb"
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_schema()
    began = time.perf_counter()
    seed_history(warehouse, events)
    seeded = time.perf_counter() - began
    full = _child(path)
    seed_new(warehouse, SAME_NEW_EVENTS, events)
    same = _child(path)
    seed_new(warehouse, events // 100, events + SAME_NEW_EVENTS)
    step = _child(path)
    return {"events": events, "seed_seconds": round(seeded, 1), "full": full,
            "incremental": step,
            "incremental/full": round(step["seconds"] / full["seconds"], 3),
            f"incremental_{SAME_NEW_EVENTS}_new": same,
            "peak_rss_mb": max(full["peak_rss_mb"], step["peak_rss_mb"], same["peak_rss_mb"])}


def _child(path: Path) -> dict[str, Any]:
    child = subprocess.run([sys.executable, "-m", "benchmarks.analytics", "--compute", str(path)],
                           capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(child.stdout)
    return result


def compute(path: Path) -> None:
    """The child of `peak_rss`: every service's daily stats and rates, nothing else."""
    store = DuckDBAnalytics(DuckDBWarehouse(path))
    store.ensure_tables()
    result = refresh_all(store)
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmHWM:")))
    print(json.dumps({**result, "peak_rss_mb": round(hwm_kb / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rss-events", type=int, default=10_000_000)
    parser.add_argument("--compute", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compute:
        compute(args.compute)
        return
    with tempfile.TemporaryDirectory(prefix="notify-analytics-") as tmp:
        result: dict[str, Any] = {"benchmark": "analytics", "machine": machine(),
                  "incremental": incremental(Path(tmp), args.events),
                  "memory": peak_rss(Path(tmp), args.rss_events)}
    result["goals"] = {
        "incremental_at_most_10_percent": result["incremental"]["incremental/full"] <= 0.10,
        "peak_rss_at_most_500_mb": result["memory"]["peak_rss_mb"] <= 500,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
