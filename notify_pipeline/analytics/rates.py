"""Bounce and complaint rates: the levels, the rolling window and one computed row.

The rates themselves are computed in warehouse SQL (see `sql.py`); this module names the levels
and holds the row the SQL returns, so the asset checks and the alerts read one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    INSUFFICIENT_VOLUME = "insufficient_volume"


class Metric(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"


ALERTING_LEVELS = (Level.WARNING, Level.CRITICAL)


def window_start(as_of: date, window_days: int) -> date:
    """First day of the window of `window_days` days that ends on (and includes) `as_of`."""
    return as_of - timedelta(days=window_days - 1)


def window_bounds(as_of: date, window_days: int) -> tuple[datetime, datetime]:
    """The window's first instant and the instant just after it, in UTC."""
    first = window_start(as_of, window_days)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return start, datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1)


@dataclass(frozen=True)
class RateRow:
    """One row of `bounce_rates`: a service's rates over the window ending on `as_of`."""

    service: str
    as_of: date
    window_days: int
    sent: int
    bounced: int
    complained: int
    bounce_rate: float
    complaint_rate: float
    bounce_level: Level
    complaint_level: Level

    def rate(self, metric: Metric) -> float:
        return self.bounce_rate if metric is Metric.BOUNCE else self.complaint_rate

    def level(self, metric: Metric) -> Level:
        return self.bounce_level if metric is Metric.BOUNCE else self.complaint_level

    def count(self, metric: Metric) -> int:
        return self.bounced if metric is Metric.BOUNCE else self.complained

    @property
    def window_first_day(self) -> date:
        return window_start(self.as_of, self.window_days)
