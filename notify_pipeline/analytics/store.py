"""The analytics store interface: what the assets ask of a warehouse, whichever it is.

Implementations run the SQL of `sql.py` where the events are (DuckDB, BigQuery), so no operation
loads a service's whole history into this process; exports stream rows in chunks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from notify_pipeline.analytics.access import Grant
from notify_pipeline.analytics.rates import Level, RateRow, window_start
from notify_pipeline.registry import AlertThresholds

# The earliest watermark: before any event was recorded.
EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
# Events whose `recorded_at` is stamped just before a slower writer commits may land behind the
# watermark; events recorded this long before it are read again, and those of them already
# counted (kept in `daily_counted`) are not counted twice.
WATERMARK_OVERLAP = timedelta(minutes=10)
DAILY_STATS_WATERMARK = "daily_stats"
BOUNCE_FORWARDING_WATERMARK = "bounce_forwarding"


@dataclass(frozen=True)
class ServiceEventsSummary:
    """What a per-service table holds: rows by event type and the newest event."""

    table: str
    by_type: Mapping[str, int]
    newest: datetime | None

    @property
    def rows(self) -> int:
        return sum(self.by_type.values())


@dataclass(frozen=True)
class DailyRefresh:
    """One service's incremental `daily_stats` refresh: the days the new events touched (the
    only rows changed) and the new watermark."""

    days: tuple[date, ...]
    rows: int
    since: datetime
    watermark: datetime | None

    @property
    def full(self) -> bool:
        return self.since == EPOCH


@dataclass(frozen=True)
class Bounce:
    """A permanent bounce, as forwarded to a service's `bounce_forwarding` addresses."""

    event_id: str
    message_id: str | None
    recipient: str | None
    occurred_at: datetime
    bounce_subtype: str | None
    reason: str | None
    subject: str | None


@dataclass(frozen=True)
class TopReasons:
    bounce: list[tuple[str, int]] = field(default_factory=list)
    complaint: list[tuple[str, int]] = field(default_factory=list)


def daily_params(services: Sequence[str], marks: Mapping[str, datetime],
                 overlap: timedelta) -> dict[str, Any]:
    """The parameters of `sql.touched_groups` for `services`, whose watermarks are `marks`."""
    return {"name": DAILY_STATS_WATERMARK, "services": list(services),
            "lower": min(since_marks(services, marks, overlap)),
            "overlap_us": overlap // timedelta(microseconds=1)}


def since_marks(services: Sequence[str], marks: Mapping[str, datetime], overlap: timedelta
                ) -> list[datetime]:
    """Where each service's refresh reads from: its watermark less the overlap (the epoch
    without one)."""
    return [marks[s] - overlap if s in marks else EPOCH for s in services]


def daily_refreshes(services: Sequence[str], marks: Mapping[str, datetime],
                    groups: Sequence[tuple[Any, ...]], overlap: timedelta
                    ) -> dict[str, DailyRefresh]:
    """Each service's refresh from the (service, day, newest recorded_at) groups of the delta;
    a watermark never moves back (an overlap event may be older than it)."""
    days: dict[str, list[date]] = {s: [] for s in services}
    newest: dict[str, datetime] = {}
    for service, day, recorded in groups:
        days[service].append(day)
        newest[service] = max(recorded, newest.get(service, recorded))
    refreshes = {}
    for s in services:
        mark = marks.get(s)
        until = max(filter(None, (mark, newest.get(s))), default=None)
        refreshes[s] = DailyRefresh(tuple(sorted(days[s])), len(days[s]),
                                    mark - overlap if mark else EPOCH, until)
    return refreshes


def moved_watermarks(refreshes: Mapping[str, DailyRefresh]) -> dict[str, datetime]:
    """The services whose refresh counted new events, and their new watermarks."""
    return {s: r.watermark for s, r in refreshes.items() if r.days and r.watermark is not None}


def by_thresholds(thresholds: Mapping[str, AlertThresholds]
                  ) -> dict[AlertThresholds, list[str]]:
    """Services grouped by alert thresholds: one rates statement per group."""
    groups: dict[AlertThresholds, list[str]] = {}
    for service in sorted(thresholds):
        groups.setdefault(thresholds[service], []).append(service)
    return groups


def rate_params(services: Sequence[str], as_of: date, thresholds: AlertThresholds
                ) -> dict[str, Any]:
    """The parameters of `sql.insert_rates`."""
    return {
        "services": list(services),
        "window_days": thresholds.window_days,
        "first_day": window_start(as_of, thresholds.window_days),
        "as_of": as_of,
        "min_volume": thresholds.min_volume,
        "bounce_warning": thresholds.bounce_warning,
        "bounce_critical": thresholds.bounce_critical,
        "complaint_warning": thresholds.complaint_warning,
        "complaint_critical": thresholds.complaint_critical,
    }


def rate_row(service: str, as_of: date, window_days: int, values: tuple[Any, ...]) -> RateRow:
    sent, bounced, complained, bounce_rate, complaint_rate, bounce_level, complaint_level = values
    return RateRow(
        service=service, as_of=as_of, window_days=window_days, sent=int(sent),
        bounced=int(bounced), complained=int(complained), bounce_rate=float(bounce_rate),
        complaint_rate=float(complaint_rate), bounce_level=Level(bounce_level),
        complaint_level=Level(complaint_level),
    )


def stored_rate_row(service: str, as_of: date, values: tuple[Any, ...]) -> RateRow:
    """A row read back by `sql.rate_on` (window_days first, then as `rate_row`)."""
    return rate_row(service, as_of, int(values[0]), tuple(values[1:]))


def stored_rate_rows(as_of: date, rows: Sequence[tuple[Any, ...]]) -> dict[str, RateRow]:
    """The rows read back by `sql.rates_on` (service first, then as `stored_rate_row`)."""
    return {row[0]: stored_rate_row(row[0], as_of, tuple(row[1:])) for row in rows}


class AnalyticsStore(ABC):
    @abstractmethod
    def ensure_tables(self) -> None:
        """Create the events, daily_stats, bounce_rates and watermark tables if missing."""

    @abstractmethod
    def refresh_service_events(self, service: str) -> ServiceEventsSummary:
        """(Re)define `events_<svc>` as exactly the service's rows; summarise it."""

    @abstractmethod
    def refresh_daily_stats_of(self, services: Sequence[str]) -> dict[str, DailyRefresh]:
        """Add the events recorded since each service's previous refresh to the (service, day)
        rows they touch, and move the watermarks, in one set of statements for all the
        services; a service's first refresh (no watermark) rebuilds its rows from scratch."""

    def refresh_daily_stats(self, service: str) -> DailyRefresh:
        return self.refresh_daily_stats_of([service])[service]

    @abstractmethod
    def compute_rates_of(self, as_of: date, thresholds: Mapping[str, AlertThresholds]
                         ) -> dict[str, RateRow]:
        """Each service's window ending on `as_of` (with its thresholds), from `daily_stats`;
        replaces the services' rows of that day. One statement per set of thresholds."""

    def compute_rates(self, service: str, as_of: date, thresholds: AlertThresholds) -> RateRow:
        return self.compute_rates_of(as_of, {service: thresholds})[service]

    @abstractmethod
    def rate_on(self, service: str, as_of: date) -> RateRow | None:
        """The `bounce_rates` row of that day, if one was computed."""

    @abstractmethod
    def top_reasons(self, service: str, as_of: date, window_days: int, limit: int = 5
                    ) -> TopReasons:
        """The commonest permanent-bounce and complaint reasons in the window."""

    @abstractmethod
    def new_permanent_bounces(self, service: str) -> tuple[list[Bounce], datetime | None]:
        """Permanent bounces recorded since the forwarding watermark, and the watermark to
        set once they are forwarded (`advance_forwarding`)."""

    @abstractmethod
    def advance_forwarding(self, service: str, watermark: datetime) -> None:
        """Record that bounces recorded up to `watermark` are forwarded."""

    @abstractmethod
    def delete_expired(self, service: str, cutoff: datetime) -> int:
        """Delete the service's events that occurred before `cutoff`; returns how many."""

    def apply_access(self, table: str, grants: Sequence[Grant]) -> bool:
        """Put the grants in force (idempotently); False where the warehouse has no principals
        to grant to (DuckDB: the plan is only shown)."""
        return False

    @abstractmethod
    def export_rows(self, service: str, since: datetime, chunk: int = 10_000, *,
                    newest_first: bool = False) -> Iterator[list[tuple[Any, ...]]]:
        """The service's events since `since`, oldest (or newest) first, in chunks of at most
        `chunk`."""
