"""Seeding event histories straight into a warehouse's events table, in SQL (fast enough for
tens of thousands of rows per test)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from notify_pipeline.warehouse.duckdb import DuckDBWarehouse


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def seed(warehouse: DuckDBWarehouse, service: str, day: date, event_type: str, n: int, *,
         bounce_type: str | None = None, reason: str | None = None,
         recorded_at: datetime | None = None, tag: str = "") -> None:
    """`n` events of one type for one service on one day, recorded at `recorded_at` (default:
    an hour after they occurred); each for its own message and recipient."""
    occurred = at(day)
    recorded = recorded_at or occurred + timedelta(hours=1)
    prefix = f"{service}-{day.isoformat()}-{event_type}-{bounce_type}-{tag}"
    with warehouse.connect() as con:
        con.execute(
            "INSERT INTO notify_events.events SELECT"
            " $prefix || '-' || i, $service, 'm-' || $prefix || '-' || i, NULL, $event_type,"
            " 'r' || i || '@example.org', $occurred, $recorded, $bounce_type, NULL, $reason,"
            " 'Subject', '{}' FROM range($n) t(i)",
            {"prefix": prefix, "service": service, "event_type": event_type, "n": n,
             "occurred": occurred, "recorded": recorded, "bounce_type": bounce_type,
             "reason": reason})
