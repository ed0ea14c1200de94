"""The analytics store of the local profile: the SQL of `sql.py` run in the DuckDB file.

Each operation is one short transaction on its own connection (DuckDB lets one process at a time
write the file), and dates are UTC days (the connection's time zone is set to UTC).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from notify_pipeline.analytics import sql
from notify_pipeline.analytics.rates import RateRow, window_bounds
from notify_pipeline.analytics.store import (
    BOUNCE_FORWARDING_WATERMARK,
    DAILY_STATS_WATERMARK,
    EPOCH,
    WATERMARK_OVERLAP,
    AnalyticsStore,
    Bounce,
    DailyRefresh,
    ServiceEventsSummary,
    TopReasons,
    by_thresholds,
    daily_refreshes,
    moved_watermarks,
    rate_params,
    since_marks,
    stored_rate_row,
    stored_rate_rows,
)
from notify_pipeline.registry import AlertThresholds
from notify_pipeline.warehouse.base import service_table
from notify_pipeline.warehouse.duckdb import DDL, SCHEMA, DuckDBWarehouse

ANALYTICS_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.daily_stats (
    service VARCHAR NOT NULL, day DATE NOT NULL, sent BIGINT, delivered BIGINT,
    bounced_permanent BIGINT, bounced_transient BIGINT, complained BIGINT, delayed BIGINT,
    rejected BIGINT, failed BIGINT
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.bounce_rates (
    service VARCHAR NOT NULL, as_of DATE NOT NULL, window_days INTEGER, sent BIGINT,
    bounced BIGINT, complained BIGINT, bounce_rate DOUBLE, complaint_rate DOUBLE,
    bounce_level VARCHAR, complaint_level VARCHAR
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.analytics_watermarks (
    name VARCHAR NOT NULL, service VARCHAR NOT NULL, recorded_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.daily_counted (
    service VARCHAR NOT NULL, event_id VARCHAR NOT NULL, recorded_at TIMESTAMPTZ NOT NULL
);
"""

D = sql.DUCKDB


class DuckDBAnalytics(AnalyticsStore):
    def __init__(self, warehouse: DuckDBWarehouse, *, overlap: timedelta = WATERMARK_OVERLAP,
                 memory_limit_mb: int = 256) -> None:
        self._warehouse = warehouse
        self._memory_limit = f"{int(memory_limit_mb)}MB"
        self._overlap = overlap
        self._ready = False
        self._held: duckdb.DuckDBPyConnection | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold one connection for the operations inside (several services in a row): opening
        the file costs more than a small refresh."""
        with self._connect() as con:
            self._held = con
            try:
                yield
            finally:
                self._held = None

    @contextmanager
    def _use(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._held is not None:
            yield self._held
            return
        with self._connect(read_only=read_only) as con:
            yield con

    @contextmanager
    def _connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._warehouse.connect(read_only=read_only) as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET memory_limit = '{self._memory_limit}'")
            yield con

    def ensure_tables(self) -> None:
        if self._ready:
            return
        with self._use() as con:
            con.execute(DDL)
            upgrade = not con.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = ?"
                " AND table_name = 'daily_counted'", [SCHEMA]).fetchall()
            con.execute(ANALYTICS_DDL)
            if upgrade:  # stats kept before daily_counted: rebuild each service once, exactly
                con.execute(f"DELETE FROM {SCHEMA}.analytics_watermarks WHERE name = ?",  # noqa: S608
                            [DAILY_STATS_WATERMARK])
        self._ready = True

    def refresh_service_events(self, service: str) -> ServiceEventsSummary:
        self._warehouse.create_service_views([service])
        table = service_table(service)
        with self._use(read_only=True) as con:
            rows = con.execute(sql.service_summary(D, table)).fetchall()
        newest = max((r[2] for r in rows), default=None)
        return ServiceEventsSummary(f"{SCHEMA}.{table}", {r[0]: int(r[1]) for r in rows}, newest)

    def refresh_daily_stats_of(self, services: Sequence[str]) -> dict[str, DailyRefresh]:
        """One transaction whose only joins are with the counted events and the touched rows;
        per-service bounds are list lookups, since DuckDB plans a list filter as a join and each
        join costs about a millisecond whatever its size."""
        self.ensure_tables()
        services = sorted(set(services))
        if not services:
            return {}
        with self._use() as con:
            con.execute("BEGIN TRANSACTION")
            marks = _marks(con, DAILY_STATS_WATERMARK, services)
            fresh = [s for s in services if s not in marks]
            if fresh:
                for table in ("daily_stats", "daily_counted"):
                    con.execute(sql.forget_services(D, table), {"services": fresh})
            since = since_marks(services, marks, self._overlap)
            # lives until the connection closes or the next refresh replaces it (few rows)
            con.execute(f"CREATE OR REPLACE TEMP TABLE daily_delta AS {sql.daily_delta(D)}",
                        {"services": services, "since": since, "lower": min(since)})
            groups = con.execute("SELECT service, day, newest FROM daily_delta").fetchall()
            refreshes = daily_refreshes(services, marks, groups, self._overlap)
            if groups:
                con.execute(sql.merge_daily(D, "daily_delta"))
                self._move(con, moved_watermarks(refreshes), marks)
            con.execute("COMMIT")
        return refreshes

    def _move(self, con: duckdb.DuckDBPyConnection, new: Mapping[str, datetime],
              old: Mapping[str, datetime]) -> None:
        """Every event the refresh saw is counted: note afresh those a later refresh reads again
        (recorded after the new watermark less the overlap), and move the watermarks."""
        moved = sorted(new)
        cut = [new[s] - self._overlap for s in moved]
        con.execute(sql.forget_counted(D), {"moved": moved})
        con.execute(sql.remember_counted(D), {"moved": moved, "cut": cut, "recent": min(cut)})
        for statement, group in ((sql.update_watermarks(D), [s for s in moved if s in old]),
                                 (sql.insert_watermarks(D), [s for s in moved if s not in old])):
            if group:
                con.execute(statement, {"name": DAILY_STATS_WATERMARK, "moved": group,
                                        "marks": [new[s] for s in group]})

    def compute_rates_of(self, as_of: date, thresholds: Mapping[str, AlertThresholds]
                         ) -> dict[str, RateRow]:
        self.ensure_tables()
        services = sorted(thresholds)
        rows = []
        with self._use() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute(sql.delete_rates(D), {"services": services, "as_of": as_of})
            for alike, group in by_thresholds(thresholds).items():
                rows += con.execute(sql.insert_rates_returning(D),
                                    rate_params(group, as_of, alike)).fetchall()
            con.execute("COMMIT")
        return stored_rate_rows(as_of, rows)

    def rate_on(self, service: str, as_of: date) -> RateRow | None:
        self.ensure_tables()
        with self._use(read_only=True) as con:
            row = con.execute(sql.rate_on(D), {"service": service, "as_of": as_of}).fetchone()
        return stored_rate_row(service, as_of, row) if row else None

    def top_reasons(self, service: str, as_of: date, window_days: int, limit: int = 5
                    ) -> TopReasons:
        start, end = window_bounds(as_of, window_days)
        base = {"service": service, "start": start, "end": end, "limit": limit}
        with self._use(read_only=True) as con:
            bounce = con.execute(sql.top_reasons(D), {
                **base, "event_type": "bounce", "bounce_type": "Permanent"}).fetchall()
            complaint = con.execute(sql.top_reasons(D), {
                **base, "event_type": "complaint", "bounce_type": None}).fetchall()
        return TopReasons([(r[0], int(r[1])) for r in bounce],
                          [(r[0], int(r[1])) for r in complaint])

    def new_permanent_bounces(self, service: str) -> tuple[list[Bounce], datetime | None]:
        self.ensure_tables()
        with self._use(read_only=True) as con:
            mark = _watermark(con, BOUNCE_FORWARDING_WATERMARK, service)
            since = mark - self._overlap if mark else EPOCH
            until = _one(con, sql.newest_recorded(D), {"service": service, "since": since})
            if until is None:
                return [], mark
            rows = con.execute(sql.permanent_bounces(D),
                               {"service": service, "since": since, "until": until}).fetchall()
        return [Bounce(*row) for row in rows], until

    def advance_forwarding(self, service: str, watermark: datetime) -> None:
        with self._use() as con:
            con.execute("BEGIN TRANSACTION")
            _set_watermark(con, BOUNCE_FORWARDING_WATERMARK, service, watermark)
            con.execute("COMMIT")

    def delete_expired(self, service: str, cutoff: datetime) -> int:
        self.ensure_tables()
        params = {"service": service, "cutoff": cutoff}
        with self._use() as con:
            con.execute("BEGIN TRANSACTION")
            doomed = int(_one(con, sql.count_expired(D), params) or 0)
            con.execute(sql.delete_expired(D), params)
            con.execute("COMMIT")
        return doomed

    def export_rows(self, service: str, since: datetime, chunk: int = 10_000, *,
                    newest_first: bool = False) -> Iterator[list[tuple[Any, ...]]]:
        self._warehouse.create_service_views([service])
        with self._use(read_only=True) as con:
            statement = sql.export_rows(D, service_table(service), newest_first=newest_first)
            cursor = con.execute(statement, {"since": since})
            while rows := cursor.fetchmany(chunk):
                yield rows

    def daily_rows(self, service: str) -> list[tuple[Any, ...]]:
        """The service's `daily_stats` rows by day (tests, summaries)."""
        with self._use(read_only=True) as con:
            return con.execute(
                f"SELECT {', '.join(sql.DAILY_COLUMNS)} FROM {SCHEMA}.daily_stats"  # noqa: S608
                " WHERE service = $service ORDER BY day", {"service": service}).fetchall()

    def rate_history(self, service: str) -> list[tuple[Any, ...]]:
        """The service's `bounce_rates` rows, oldest first (tests, summaries)."""
        with self._use(read_only=True) as con:
            return con.execute(
                f"SELECT {', '.join(sql.RATE_COLUMNS)} FROM {SCHEMA}.bounce_rates"  # noqa: S608
                " WHERE service = $service ORDER BY as_of", {"service": service}).fetchall()


def _one(con: duckdb.DuckDBPyConnection, statement: str, params: dict[str, Any]) -> Any:
    row = con.execute(statement, params).fetchone()
    return row[0] if row else None


def _marks(con: duckdb.DuckDBPyConnection, name: str, services: Sequence[str]
           ) -> dict[str, datetime]:
    """The services' watermarks of one name (the newest, should a service have two rows)."""
    wanted = set(services)
    marks: dict[str, datetime] = {}
    for service, recorded_at in con.execute(sql.all_watermarks(D), {"name": name}).fetchall():
        if service in wanted:
            marks[service] = max(recorded_at, marks.get(service, recorded_at))
    return marks


def _watermark(con: duckdb.DuckDBPyConnection, name: str, service: str) -> datetime | None:
    value: datetime | None = _one(
        con, f"SELECT MAX(recorded_at) FROM {SCHEMA}.analytics_watermarks"  # noqa: S608
        " WHERE name = $name AND service = $service", {"name": name, "service": service})
    return value


def _set_watermark(con: duckdb.DuckDBPyConnection, name: str, service: str,
                   recorded_at: datetime) -> None:
    params = {"name": name, "service": service}
    con.execute(f"DELETE FROM {SCHEMA}.analytics_watermarks"  # noqa: S608
                " WHERE name = $name AND service = $service", params)
    con.execute(f"INSERT INTO {SCHEMA}.analytics_watermarks VALUES ($name, $service, $at)",  # noqa: S608
                {**params, "at": recorded_at})

