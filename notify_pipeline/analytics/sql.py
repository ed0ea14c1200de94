"""The analytics SQL, written once for both warehouses; a `Dialect` fills in what differs.

Every statement reads or writes one service's rows and takes its values as query parameters;
table names reach SQL only after `service_table` or the warehouse has validated them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

DAILY_COLUMNS = (
    "service", "day", "sent", "delivered", "bounced_permanent", "bounced_transient",
    "complained", "delayed", "rejected", "failed",
)
RATE_COLUMNS = (
    "service", "as_of", "window_days", "sent", "bounced", "complained", "bounce_rate",
    "complaint_rate", "bounce_level", "complaint_level",
)
EXPORT_COLUMNS = (
    "event_id", "service", "message_id", "provider_message_id", "event_type", "recipient",
    "occurred_at", "recorded_at", "bounce_type", "bounce_subtype", "reason", "subject", "tags",
)

# daily_stats column -> the events that count towards it (DESIGN.md, Analytics).
_DAILY_COUNTS = {
    "sent": "event_type = 'send'",
    "delivered": "event_type = 'delivery'",
    "bounced_permanent": "event_type = 'bounce' AND bounce_type = 'Permanent'",
    "bounced_transient": "event_type = 'bounce' AND bounce_type = 'Transient'",
    "complained": "event_type = 'complaint'",
    "delayed": "event_type = 'delivery_delay'",
    "rejected": "event_type = 'reject'",
    "failed": "event_type = 'failure'",
}


@dataclass(frozen=True)
class Dialect:
    """What DuckDB and BigQuery spell differently."""

    table: Callable[[str], str]  # a table's name -> how a query names it
    param_prefix: str  # "$" (DuckDB) or "@" (BigQuery)
    day_template: str  # the UTC day of a timestamp column `{}`
    float_type: str
    in_list_template: str  # `{expr}` is one of the array parameter `{param}`

    def p(self, name: str) -> str:
        return self.param_prefix + name

    def day(self, column: str) -> str:
        return self.day_template.format(column)

    def in_list(self, expr: str, param: str) -> str:
        return self.in_list_template.format(expr=expr, param=self.p(param))


DUCKDB = Dialect(
    table=lambda name: f"notify_events.{name}",
    param_prefix="$",
    day_template="CAST({} AS DATE)",
    float_type="DOUBLE",
    in_list_template="list_contains({param}, {expr})",
)


def bigquery_dialect(table: Callable[[str], str]) -> Dialect:
    return Dialect(table=table, param_prefix="@", day_template="DATE({})",
                   float_type="FLOAT64", in_list_template="{expr} IN UNNEST({param})")


def newest_recorded(d: Dialect) -> str:
    """The newest `recorded_at` after `since` (None when nothing new). Params: service, since."""
    return (
        f"SELECT MAX(recorded_at) FROM {d.table('events')}"  # noqa: S608
        f" WHERE service = {d.p('service')} AND recorded_at > {d.p('since')}"
    )


def touched_days(d: Dialect) -> str:
    """Days with events recorded in (since, until]. Params: service, since, until."""
    return (
        f"SELECT DISTINCT {d.day('occurred_at')} AS day FROM {d.table('events')}"  # noqa: S608
        f" WHERE service = {d.p('service')} AND recorded_at > {d.p('since')}"
        f" AND recorded_at <= {d.p('until')} ORDER BY day"
    )


def _days_filter(d: Dialect, day: str) -> str:
    """`day` is one of the array `days`; the range on `occurred_at` beside it lets DuckDB skip
    row groups (zone maps) and BigQuery skip partitions, which an array test alone does not."""
    return (f"occurred_at >= {d.p('from_ts')} AND occurred_at < {d.p('until_ts')}"
            f" AND {d.in_list(day, 'days')}")


def days_params(days: list[date]) -> dict[str, Any]:
    """The parameters of `insert_daily` for recomputing `days` (at least one)."""
    first, last = min(days), max(days)
    return {
        "days": days,
        "from_ts": datetime(first.year, first.month, first.day, tzinfo=UTC),
        "until_ts": datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1),
    }


def delete_daily(d: Dialect) -> str:
    """Params: service, days."""
    return (
        f"DELETE FROM {d.table('daily_stats')} WHERE service = {d.p('service')}"  # noqa: S608
        f" AND {d.in_list('day', 'days')}"
    )


def insert_daily(d: Dialect) -> str:
    """The given days recomputed from the events. Params: service and `days_params`."""
    counts = ", ".join(
        f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS {name}" for name, cond in _DAILY_COUNTS.items()
    )
    day = d.day("occurred_at")
    return (
        f"INSERT INTO {d.table('daily_stats')} ({', '.join(DAILY_COLUMNS)})"  # noqa: S608
        f" SELECT service, {day} AS day, {counts} FROM {d.table('events')}"
        f" WHERE service = {d.p('service')} AND {_days_filter(d, day)}"
        f" GROUP BY service, {day}"
    )


def _level(d: Dialect, rate: str, warning: str, critical: str) -> str:
    return (
        f"CASE WHEN sent < {d.p('min_volume')} THEN 'insufficient_volume'"
        f" WHEN {rate} >= {d.p(critical)} THEN 'critical'"
        f" WHEN {rate} >= {d.p(warning)} THEN 'warning' ELSE 'ok' END"
    )


def rates(d: Dialect) -> str:
    """The window's sums from `daily_stats`, the rates and the levels (DESIGN.md, Analytics).

    Params: service, first_day, as_of, window_days, min_volume and the four thresholds."""
    ratio = "CASE WHEN sent = 0 THEN 0.0 ELSE CAST({} AS " + d.float_type + ") / sent END"
    return (
        "WITH totals AS ("  # noqa: S608
        " SELECT COALESCE(SUM(sent), 0) AS sent,"
        " COALESCE(SUM(bounced_permanent), 0) AS bounced,"
        " COALESCE(SUM(complained), 0) AS complained"
        f" FROM {d.table('daily_stats')} WHERE service = {d.p('service')}"
        f" AND day >= {d.p('first_day')} AND day <= {d.p('as_of')}),"
        f" ratios AS (SELECT sent, bounced, complained, {ratio.format('bounced')} AS bounce_rate,"
        f" {ratio.format('complained')} AS complaint_rate FROM totals)"
        " SELECT sent, bounced, complained, bounce_rate, complaint_rate,"
        f" {_level(d, 'bounce_rate', 'bounce_warning', 'bounce_critical')} AS bounce_level,"
        f" {_level(d, 'complaint_rate', 'complaint_warning', 'complaint_critical')}"
        " AS complaint_level FROM ratios"
    )


def delete_rate(d: Dialect) -> str:
    """Params: service, as_of."""
    return (
        f"DELETE FROM {d.table('bounce_rates')} WHERE service = {d.p('service')}"  # noqa: S608
        f" AND as_of = {d.p('as_of')}"
    )


def insert_rate(d: Dialect) -> str:
    """Params: every rate column."""
    values = ", ".join(d.p(c) for c in RATE_COLUMNS)
    return f"INSERT INTO {d.table('bounce_rates')} ({', '.join(RATE_COLUMNS)}) VALUES ({values})"  # noqa: S608


def rate_on(d: Dialect) -> str:
    """Params: service, as_of."""
    return (
        "SELECT window_days, sent, bounced, complained, bounce_rate, complaint_rate,"  # noqa: S608
        f" bounce_level, complaint_level FROM {d.table('bounce_rates')}"
        f" WHERE service = {d.p('service')} AND as_of = {d.p('as_of')}"
    )


def top_reasons(d: Dialect) -> str:
    """The commonest reasons of one kind of event in the window. Params: service, event_type,
    bounce_type (ignored when null), start, end (timestamps), limit."""
    return (
        "SELECT COALESCE(reason, bounce_subtype, 'unspecified') AS why, COUNT(*) AS n"  # noqa: S608
        f" FROM {d.table('events')} WHERE service = {d.p('service')}"
        f" AND event_type = {d.p('event_type')}"
        f" AND ({d.p('bounce_type')} IS NULL OR bounce_type = {d.p('bounce_type')})"
        f" AND occurred_at >= {d.p('start')} AND occurred_at < {d.p('end')}"
        f" GROUP BY why ORDER BY n DESC, why LIMIT {d.p('limit')}"
    )


def permanent_bounces(d: Dialect) -> str:
    """Permanent bounces recorded in (since, until]. Params: service, since, until."""
    return (
        "SELECT event_id, message_id, recipient, occurred_at, bounce_subtype, reason, subject"  # noqa: S608
        f" FROM {d.table('events')} WHERE service = {d.p('service')}"
        " AND event_type = 'bounce' AND bounce_type = 'Permanent'"
        f" AND recorded_at > {d.p('since')} AND recorded_at <= {d.p('until')}"
        " ORDER BY recorded_at, event_id"
    )


def delete_expired(d: Dialect) -> str:
    """Params: service, cutoff."""
    return (
        f"DELETE FROM {d.table('events')} WHERE service = {d.p('service')}"  # noqa: S608
        f" AND occurred_at < {d.p('cutoff')}"
    )


def count_expired(d: Dialect) -> str:
    """Params: service, cutoff."""
    return (
        f"SELECT COUNT(*) FROM {d.table('events')} WHERE service = {d.p('service')}"  # noqa: S608
        f" AND occurred_at < {d.p('cutoff')}"
    )


def export_rows(d: Dialect, table: str, *, newest_first: bool = False) -> str:
    """A service's events since a time, oldest (or newest) first. Params: since."""
    order = "occurred_at DESC, event_id DESC" if newest_first else "occurred_at, event_id"
    return (
        f"SELECT {', '.join(EXPORT_COLUMNS)} FROM {d.table(table)}"  # noqa: S608
        f" WHERE occurred_at >= {d.p('since')} ORDER BY {order}"
    )


def service_summary(d: Dialect, table: str) -> str:
    """Rows by event type and the newest event of a per-service table."""
    return (
        f"SELECT event_type, COUNT(*), MAX(occurred_at) FROM {d.table(table)}"  # noqa: S608
        " GROUP BY event_type ORDER BY event_type"
    )
