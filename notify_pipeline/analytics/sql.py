"""The analytics SQL, written once for both warehouses; a `Dialect` fills in what differs.

Every statement reads or writes the rows of the services it is given (one statement for all of
them, not one per service) and takes its values as query parameters; table names reach SQL only
after `service_table` or the warehouse has validated them.
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
    count_template: str  # how many rows of the group meet the condition `{}`
    overlap_template: str  # the timestamp `{}` less the parameter `overlap_us` microseconds
    services_template: str  # the array parameter `services` as rows of one column `service`

    def p(self, name: str) -> str:
        return self.param_prefix + name

    def day(self, column: str) -> str:
        return self.day_template.format(column)

    def in_list(self, expr: str, param: str) -> str:
        return self.in_list_template.format(expr=expr, param=self.p(param))

    def count_if(self, condition: str) -> str:
        return self.count_template.format(condition)

    def minus_overlap(self, expr: str) -> str:
        return self.overlap_template.format(expr)

    def services(self) -> str:
        return self.services_template


DUCKDB = Dialect(
    table=lambda name: f"notify_events.{name}",
    param_prefix="$",
    # the UTC day from the epoch, with no time-zone lookup per row: 1.5x cheaper scans
    day_template="CAST(make_timestamp(epoch_us({})) AS DATE)",
    float_type="DOUBLE",
    # a scalar test: DuckDB plans `list_contains` of a list parameter as a join
    in_list_template="list_position({param}, {expr}) IS NOT NULL",
    count_template="count(*) FILTER (WHERE {})",
    overlap_template="({} - to_microseconds($overlap_us))",
    services_template="(SELECT unnest($services) AS service)",
)


def bigquery_dialect(table: Callable[[str], str]) -> Dialect:
    return Dialect(
        table=table, param_prefix="@", day_template="DATE({})", float_type="FLOAT64",
        in_list_template="{expr} IN UNNEST({param})",
        count_template="SUM(CASE WHEN {} THEN 1 ELSE 0 END)",
        overlap_template="TIMESTAMP_SUB({}, INTERVAL @overlap_us MICROSECOND)",
        services_template="(SELECT service FROM UNNEST(@services) AS service)")


def newest_recorded(d: Dialect) -> str:
    """The newest `recorded_at` after `since` (None when nothing new). Params: service, since."""
    return (
        f"SELECT MAX(recorded_at) FROM {d.table('events')}"  # noqa: S608
        f" WHERE service = {d.p('service')} AND recorded_at > {d.p('since')}"
    )


def watermarks(d: Dialect) -> str:
    """The services' watermarks of one name. Params: name, services."""
    return (
        f"SELECT service, MAX(recorded_at) FROM {d.table('analytics_watermarks')}"  # noqa: S608
        f" WHERE name = {d.p('name')} AND {d.in_list('service', 'services')} GROUP BY service"
    )


def forget_services(d: Dialect, table: str) -> str:
    """Every row of the services in `daily_stats` or `daily_counted`. Params: services."""
    return f"DELETE FROM {d.table(table)} WHERE {d.in_list('service', 'services')}"  # noqa: S608


def _new_events(d: Dialect) -> str:
    """The events of the services recorded after their watermark less the overlap. The constant
    lower bound `lower` (the earliest of those) lets the warehouse skip what is older (zone
    maps, partitions). Params: name, services, lower, overlap_us."""
    return (
        f" FROM {d.table('events')} e"
        f" LEFT JOIN {d.table('analytics_watermarks')} m"
        f" ON m.name = {d.p('name')} AND m.service = e.service"
        f" WHERE {d.in_list('e.service', 'services')} AND e.recorded_at > {d.p('lower')}"
        f" AND (m.recorded_at IS NULL OR e.recorded_at > {d.minus_overlap('m.recorded_at')})"
    )


def _counts(d: Dialect) -> str:
    return ", ".join(f"{d.count_if(cond)} AS {name}" for name, cond in _DAILY_COUNTS.items())


def touched_groups(d: Dialect) -> str:
    """The (service, day) groups that events recorded since the watermarks (less the overlap)
    touch, and the newest `recorded_at` of each. Params: those of `_new_events`."""
    return (
        f"SELECT e.service, {d.day('e.occurred_at')} AS day, MAX(e.recorded_at) AS newest"
        f"{_new_events(d)} GROUP BY 1, 2"
    )


def group_keys(groups: list[tuple[str, date]]) -> list[str]:
    """The `groups` parameter of the statements recomputing (service, day) groups."""
    return [f"{service}/{day.isoformat()}" for service, day in groups]


def _in_groups(d: Dialect, service: str, day: str) -> str:
    return d.in_list(f"CONCAT({service}, '/', CAST({day} AS STRING))", "groups")


def delete_groups(d: Dialect) -> str:
    """Params: services, days, groups (`group_keys`)."""
    return (
        f"DELETE FROM {d.table('daily_stats')} WHERE {d.in_list('service', 'services')}"  # noqa: S608
        f" AND {d.in_list('day', 'days')} AND {_in_groups(d, 'service', 'day')}"
    )


def insert_groups(d: Dialect) -> str:
    """The groups recomputed from their events; the `occurred_at` range beside the list of
    days lets BigQuery prune partitions (a list test alone prunes nothing). Params: services,
    groups and `days_params`."""
    day = d.day("occurred_at")
    return (
        f"INSERT INTO {d.table('daily_stats')} ({', '.join(DAILY_COLUMNS)})"  # noqa: S608
        f" SELECT service, {day} AS day, {_counts(d)} FROM {d.table('events')}"
        f" WHERE {d.in_list('service', 'services')} AND occurred_at >= {d.p('from_ts')}"
        f" AND occurred_at < {d.p('until_ts')} AND {d.in_list(day, 'days')}"
        f" AND {_in_groups(d, 'service', day)} GROUP BY 1, 2"
    )


def days_params(days: list[date]) -> dict[str, Any]:
    """The day parameters of `insert_groups` for recomputing `days` (at least one)."""
    first, last = min(days), max(days)
    return {
        "days": days,
        "from_ts": datetime(first.year, first.month, first.day, tzinfo=UTC),
        "until_ts": datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1),
    }


def all_watermarks(d: Dialect) -> str:
    """Every service's watermark of one name (DuckDB: a few rows, filtered by the caller; a
    filter on a list of services would cost a join). Params: name."""
    return (
        f"SELECT service, recorded_at FROM {d.table('analytics_watermarks')}"  # noqa: S608
        f" WHERE name = {d.p('name')}"
    )


def _of_service(d: Dialect, values: str, services: str, service: str) -> str:
    """DuckDB: the element of the list parameter `values` at the position of `service` in the
    list parameter `services` (NULL for another service): a per-service bound with no join."""
    return f"{d.p(values)}[list_position({d.p(services)}, {service})]"


def daily_delta(d: Dialect) -> str:
    """DuckDB: what the uncounted events add to each (service, day) they touch, and the newest
    `recorded_at` among them. The events are those of the services recorded after their own
    `since`, less those counted already (`daily_counted`); the constant lower bound `lower` (the
    earliest `since`) lets DuckDB skip row groups by their zone maps. Params: services, since
    (a list beside `services`), lower."""
    return (
        f"SELECT e.service AS service, {d.day('e.occurred_at')} AS day, {_counts(d)},"  # noqa: S608
        f" MAX(e.recorded_at) AS newest FROM {d.table('events')} e"
        f" LEFT JOIN {d.table('daily_counted')} c"
        " ON c.service = e.service AND c.event_id = e.event_id"
        f" WHERE e.recorded_at > {d.p('lower')}"
        f" AND e.recorded_at > {_of_service(d, 'since', 'services', 'e.service')}"
        " AND c.event_id IS NULL GROUP BY 1, 2"
    )


def merge_daily(d: Dialect, delta: str) -> str:
    """Add the `delta` (a table or a parenthesised `daily_delta`) to the rows it touches;
    insert the (service, day) rows it is the first of."""
    added = ", ".join(f"{c} = t.{c} + s.{c}" for c in DAILY_COLUMNS[2:])
    return (
        f"MERGE INTO {d.table('daily_stats')} t USING {delta} s"  # noqa: S608
        f" ON t.service = s.service AND t.day = s.day WHEN MATCHED THEN UPDATE SET {added}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(DAILY_COLUMNS)})"
        f" VALUES ({', '.join('s.' + c for c in DAILY_COLUMNS)})"
    )


def forget_counted(d: Dialect) -> str:
    """DuckDB: the counted events of the services whose watermark moves (`remember_counted`
    notes them afresh). Params: moved (services)."""
    return (
        f"DELETE FROM {d.table('daily_counted')}"  # noqa: S608
        f" WHERE {d.in_list('service', 'moved')}"
    )


def remember_counted(d: Dialect) -> str:
    """DuckDB: once a refresh has counted every event it sees, the events a later refresh reads
    again are those recorded after the new watermark less the overlap (`cut`); note them, so
    they are not counted twice. Params: moved (services), cut (a list beside them), recent
    (the earliest cut, for the zone maps)."""
    return (
        f"INSERT INTO {d.table('daily_counted')} (service, event_id, recorded_at)"  # noqa: S608
        f" SELECT service, event_id, recorded_at FROM {d.table('events')}"
        f" WHERE recorded_at > {d.p('recent')}"
        f" AND recorded_at > {_of_service(d, 'cut', 'moved', 'service')}"
    )


def newest_by_service(d: Dialect) -> str:
    """The newest `recorded_at` of each service's new events, for `set_watermarks`."""
    return (f"(SELECT e.service AS service, MAX(e.recorded_at) AS recorded_at"
            f"{_new_events(d)} GROUP BY 1)")


def set_watermarks(d: Dialect, source: str) -> str:
    """Move the watermarks to the newest `recorded_at` of `source` (rows of service,
    recorded_at), never back: an event of the overlap may be older than its watermark.
    Params: name, and those of `source`."""
    return (
        f"MERGE INTO {d.table('analytics_watermarks')} t USING {source} s"  # noqa: S608
        f" ON t.name = {d.p('name')} AND t.service = s.service"
        " WHEN MATCHED THEN UPDATE SET recorded_at = GREATEST(t.recorded_at, s.recorded_at)"
        " WHEN NOT MATCHED THEN INSERT (name, service, recorded_at)"
        f" VALUES ({d.p('name')}, s.service, s.recorded_at)"
    )


def update_watermarks(d: Dialect) -> str:
    """DuckDB: move the services' watermarks (rows they have) to the given times, computed by
    the caller and never earlier than before. Params: name, moved (services), marks (a list
    beside them)."""
    return (
        f"UPDATE {d.table('analytics_watermarks')}"  # noqa: S608
        f" SET recorded_at = {_of_service(d, 'marks', 'moved', 'service')}"
        f" WHERE name = {d.p('name')} AND {d.in_list('service', 'moved')}"
    )


def insert_watermarks(d: Dialect) -> str:
    """DuckDB: the first watermarks of services. Params: name, moved, marks."""
    return (
        f"INSERT INTO {d.table('analytics_watermarks')} (name, service, recorded_at)"
        f" SELECT {d.p('name')}, unnest({d.p('moved')}), unnest({d.p('marks')})"
    )


def _level(d: Dialect, rate: str, warning: str, critical: str) -> str:
    return (
        f"CASE WHEN sent < {d.p('min_volume')} THEN 'insufficient_volume'"
        f" WHEN {rate} >= {d.p(critical)} THEN 'critical'"
        f" WHEN {rate} >= {d.p(warning)} THEN 'warning' ELSE 'ok' END"
    )


def delete_rates(d: Dialect) -> str:
    """Params: services, as_of."""
    return (
        f"DELETE FROM {d.table('bounce_rates')} WHERE {d.in_list('service', 'services')}"  # noqa: S608
        f" AND as_of = {d.p('as_of')}"
    )


def insert_rates(d: Dialect) -> str:
    """One row per service (alert thresholds alike): the window's sums from `daily_stats`, the
    rates and the levels (DESIGN.md, Analytics). Params: services, first_day, as_of,
    window_days, min_volume and the four thresholds."""
    ratio = "CASE WHEN sent = 0 THEN 0.0 ELSE CAST({} AS " + d.float_type + ") / sent END"
    window = (
        "SELECT service, sent, bounced_permanent AS bounced, complained"  # noqa: S608
        f" FROM {d.table('daily_stats')} WHERE {d.in_list('service', 'services')}"
        f" AND day >= {d.p('first_day')} AND day <= {d.p('as_of')}"
    )
    # a zero row per service, so a service with no stats in the window still gets its row
    totals = (
        "SELECT service, SUM(sent) AS sent, SUM(bounced) AS bounced,"  # noqa: S608
        f" SUM(complained) AS complained FROM ({window}"
        f" UNION ALL SELECT service, 0, 0, 0 FROM {d.services()} w) days GROUP BY service"
    )
    ratios = (
        "SELECT service, sent, bounced, complained,"  # noqa: S608
        f" {ratio.format('bounced')} AS bounce_rate,"
        f" {ratio.format('complained')} AS complaint_rate FROM ({totals}) totals"
    )
    return (
        f"INSERT INTO {d.table('bounce_rates')} ({', '.join(RATE_COLUMNS)})"  # noqa: S608
        f" SELECT service, {d.p('as_of')}, {d.p('window_days')}, sent, bounced, complained,"
        " bounce_rate, complaint_rate,"
        f" {_level(d, 'bounce_rate', 'bounce_warning', 'bounce_critical')},"
        f" {_level(d, 'complaint_rate', 'complaint_warning', 'complaint_critical')}"
        f" FROM ({ratios}) ratios"
    )


# A `bounce_rates` row as `stored_rate_rows` reads it.
_RATE_READ = ("service, window_days, sent, bounced, complained, bounce_rate, complaint_rate,"
              " bounce_level, complaint_level")


def insert_rates_returning(d: Dialect) -> str:
    """DuckDB: `insert_rates` handing back the rows it inserts (no second read)."""
    return f"{insert_rates(d)} RETURNING {_RATE_READ}"


def rates_on(d: Dialect) -> str:
    """The services' `bounce_rates` rows of one day. Params: services, as_of."""
    return (
        f"SELECT {_RATE_READ} FROM {d.table('bounce_rates')}"  # noqa: S608
        f" WHERE {d.in_list('service', 'services')} AND as_of = {d.p('as_of')}"
    )


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
