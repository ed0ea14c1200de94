"""The analytics store of the gcp profile: the SQL of `sql.py` run as BigQuery jobs.

`daily_stats` is partitioned by `day` and `bounce_rates` by `as_of`, both clustered by service;
the events table is partitioned by `occurred_at`, so retention deletes touch only the partitions
they name, and `daily_stats` recomputes only the partitions of the days new events touch. Each
refresh is a few DML statements in an order that can be repeated: a crash leaves the watermarks
where they were, and the next run recomputes the same (service, day) groups.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from google.api_core.exceptions import Forbidden, GoogleAPICallError, MethodNotAllowed, NotFound
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from notify_pipeline.analytics import sql
from notify_pipeline.analytics.access import AccessFailure, AccessNotApplied, Grant
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
    daily_params,
    daily_refreshes,
    rate_params,
    stored_rate_row,
    stored_rate_rows,
)
from notify_pipeline.registry import AlertThresholds
from notify_pipeline.warehouse.base import service_table
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse


def _f(name: str, kind: str) -> bigquery.SchemaField:
    return bigquery.SchemaField(name, kind, mode="NULLABLE")


_COUNT_FIELDS = [_f(c, "INT64") for c in sql.DAILY_COLUMNS[2:]]
TABLES: dict[str, tuple[list[bigquery.SchemaField], str | None]] = {
    "daily_stats": ([_f("service", "STRING"), _f("day", "DATE"), *_COUNT_FIELDS], "day"),
    "bounce_rates": ([
        _f("service", "STRING"), _f("as_of", "DATE"), _f("window_days", "INT64"),
        _f("sent", "INT64"), _f("bounced", "INT64"), _f("complained", "INT64"),
        _f("bounce_rate", "FLOAT64"), _f("complaint_rate", "FLOAT64"),
        _f("bounce_level", "STRING"), _f("complaint_level", "STRING"),
    ], "as_of"),
    "analytics_watermarks": (
        [_f("name", "STRING"), _f("service", "STRING"), _f("recorded_at", "TIMESTAMP")], None),
}


Parameter = bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter


def _kind(value: Any) -> str:
    return ("BOOL" if isinstance(value, bool) else "INT64" if isinstance(value, int)
            else "FLOAT64" if isinstance(value, float) else "TIMESTAMP"
            if isinstance(value, datetime) else "DATE" if isinstance(value, date) else "STRING")


def _parameter(name: str, value: Any) -> Parameter:
    if isinstance(value, list):  # of one type; an empty list is of strings
        return bigquery.ArrayQueryParameter(name, _kind(value[0]) if value else "STRING", value)
    return bigquery.ScalarQueryParameter(name, _kind(value), value)


def _grant(policy: Any, grants: Sequence[Grant]) -> bool:
    """Add the grants' members to the policy's bindings; True when something was added."""
    changed = False
    for role in sorted({g.role for g in grants}):
        wanted = {g.principal for g in grants if g.role == role}
        binding = next((b for b in policy.bindings if b["role"] == role), None)
        if binding is None:
            policy.bindings.append({"role": role, "members": set(wanted)})
            changed = True
            continue
        missing = wanted - set(binding["members"])
        if missing:
            binding["members"] = set(binding["members"]) | missing
            changed = True
    return changed


class BigQueryAnalytics(AnalyticsStore):
    def __init__(self, warehouse: BigQueryWarehouse, client: bigquery.Client, *,
                 timeout_seconds: float = 120.0, retry_seconds: float = 300.0) -> None:
        self._warehouse = warehouse
        self._client = client
        self._timeout = timeout_seconds
        self._retry = DEFAULT_RETRY.with_timeout(retry_seconds)
        self._job_retry = DEFAULT_JOB_RETRY.with_timeout(retry_seconds)
        prefix = warehouse.table_id.rsplit(".", 1)[0]
        self.dialect = sql.bigquery_dialect(lambda name: f"`{prefix}.{name}`")
        self._prefix = prefix
        self._ready = False

    def _run(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        config = bigquery.QueryJobConfig(
            query_parameters=[_parameter(k, v) for k, v in (params or {}).items()])
        job = self._client.query(statement, job_config=config, retry=self._retry,
                                 job_retry=self._job_retry, timeout=self._timeout)
        return list(job.result(retry=self._retry, timeout=self._timeout))

    def _one(self, statement: str, params: Mapping[str, Any]) -> Any:
        rows = self._run(statement, params)
        return rows[0][0] if rows else None

    def ensure_tables(self) -> None:
        if self._ready:
            return
        self._warehouse.ensure_table()
        for name, (schema, partition) in TABLES.items():
            table = bigquery.Table(f"{self._prefix}.{name}", schema=schema)
            if partition:
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=partition)
                table.clustering_fields = ["service"]
            self._client.create_table(table, exists_ok=True, retry=self._retry,
                                      timeout=self._timeout)
        self._ready = True

    def refresh_service_events(self, service: str) -> ServiceEventsSummary:
        self._warehouse.create_service_views([service])
        table = service_table(service)
        rows = self._run(sql.service_summary(self.dialect, table))
        newest = max((r[2] for r in rows), default=None)
        return ServiceEventsSummary(f"{self._prefix}.{table}", {r[0]: int(r[1]) for r in rows},
                                    newest)

    def refresh_daily_stats_of(self, services: Sequence[str]) -> dict[str, DailyRefresh]:
        """Recompute (not add to) the (service, day) rows touched since the watermarks: BigQuery
        takes query parameters in single statements only, and a recompute repeated after a
        crash gives the same rows, where an addition would count events twice."""
        self.ensure_tables()
        d = self.dialect
        services = sorted(set(services))
        if not services:
            return {}
        marks = {r[0]: r[1] for r in self._run(sql.watermarks(d), {
            "name": DAILY_STATS_WATERMARK, "services": services})}
        fresh = [s for s in services if s not in marks]
        if fresh:
            self._run(sql.forget_services(d, "daily_stats"), {"services": fresh})
        params = daily_params(services, marks, WATERMARK_OVERLAP)
        groups = [tuple(r) for r in self._run(sql.touched_groups(d), params)]
        refreshes = daily_refreshes(services, marks, groups, WATERMARK_OVERLAP)
        if groups:
            keys = {"services": sorted({g[0] for g in groups}),
                    "groups": sql.group_keys([(g[0], g[1]) for g in groups])}
            days = sorted({g[1] for g in groups})
            self._run(sql.delete_groups(d), {**keys, "days": days})
            self._run(sql.insert_groups(d), {**keys, **sql.days_params(days)})
            self._run(sql.set_watermarks(d, sql.newest_by_service(d)), params)
        return refreshes

    def compute_rates_of(self, as_of: date, thresholds: Mapping[str, AlertThresholds]
                         ) -> dict[str, RateRow]:
        self.ensure_tables()
        d = self.dialect
        services = sorted(thresholds)
        self._run(sql.delete_rates(d), {"services": services, "as_of": as_of})
        for alike, group in by_thresholds(thresholds).items():
            self._run(sql.insert_rates(d), rate_params(group, as_of, alike))
        rows = self._run(sql.rates_on(d), {"services": services, "as_of": as_of})
        return stored_rate_rows(as_of, [tuple(r) for r in rows])

    def rate_on(self, service: str, as_of: date) -> RateRow | None:
        self.ensure_tables()
        rows = self._run(sql.rate_on(self.dialect), {"service": service, "as_of": as_of})
        return stored_rate_row(service, as_of, tuple(rows[0])) if rows else None

    def top_reasons(self, service: str, as_of: date, window_days: int, limit: int = 5
                    ) -> TopReasons:
        start, end = window_bounds(as_of, window_days)
        base = {"service": service, "start": start, "end": end, "limit": limit}
        bounce = self._run(sql.top_reasons(self.dialect),
                           {**base, "event_type": "bounce", "bounce_type": "Permanent"})
        complaint = self._run(sql.top_reasons(self.dialect),
                              {**base, "event_type": "complaint", "bounce_type": None})
        return TopReasons([(r[0], int(r[1])) for r in bounce],
                          [(r[0], int(r[1])) for r in complaint])

    def new_permanent_bounces(self, service: str) -> tuple[list[Bounce], datetime | None]:
        self.ensure_tables()
        mark = self._watermark(BOUNCE_FORWARDING_WATERMARK, service)
        since = mark - WATERMARK_OVERLAP if mark else EPOCH
        until = self._one(sql.newest_recorded(self.dialect), {"service": service, "since": since})
        if until is None:
            return [], mark
        rows = self._run(sql.permanent_bounces(self.dialect),
                         {"service": service, "since": since, "until": until})
        return [Bounce(*tuple(row)) for row in rows], until

    def advance_forwarding(self, service: str, watermark: datetime) -> None:
        self._set_watermark(BOUNCE_FORWARDING_WATERMARK, service, watermark)

    def delete_expired(self, service: str, cutoff: datetime) -> int:
        self.ensure_tables()
        params = {"service": service, "cutoff": cutoff}
        doomed = int(self._one(sql.count_expired(self.dialect), params) or 0)
        if doomed:
            self._run(sql.delete_expired(self.dialect), params)
        return doomed

    def apply_access(self, table: str, grants: Sequence[Grant]) -> bool:
        """Authorize the view on the events dataset, then grant each principal read access to
        the view alone (table-level IAM). Both steps change nothing when already in force."""
        try:
            self.authorize_view(table)
            self.grant_readers(table, grants)
        except GoogleAPICallError as exc:
            reason = (AccessFailure.DENIED if isinstance(exc, Forbidden) else
                      AccessFailure.UNSUPPORTED if isinstance(exc, MethodNotAllowed | NotFound)
                      else AccessFailure.FAILED)
            raise AccessNotApplied(reason, f"{table}: HTTP {exc.code}") from exc
        return True

    def authorize_view(self, table: str) -> bool:
        """Let the view read the events on its readers' behalf; True when newly authorized."""
        project, dataset_id, view = table.split(".")
        dataset = self._client.get_dataset(f"{project}.{dataset_id}", retry=self._retry,
                                           timeout=self._timeout)
        entry = bigquery.AccessEntry(None, "view", {
            "projectId": project, "datasetId": dataset_id, "tableId": view})
        if entry in dataset.access_entries:
            return False
        dataset.access_entries = [*dataset.access_entries, entry]
        self._client.update_dataset(dataset, ["access_entries"], retry=self._retry,
                                    timeout=self._timeout)
        return True

    def grant_readers(self, table: str, grants: Sequence[Grant]) -> bool:
        """Table-level IAM bindings for the grants; True when the policy changed."""
        policy = self._client.get_iam_policy(table, retry=self._retry, timeout=self._timeout)
        if not _grant(policy, grants):
            return False
        self._client.set_iam_policy(table, policy, retry=self._retry, timeout=self._timeout)
        return True

    def export_rows(self, service: str, since: datetime, chunk: int = 10_000, *,
                    newest_first: bool = False) -> Iterator[list[tuple[Any, ...]]]:
        self._warehouse.create_service_views([service])
        config = bigquery.QueryJobConfig(query_parameters=[_parameter("since", since)])
        job = self._client.query(sql.export_rows(self.dialect, service_table(service),
                                                 newest_first=newest_first),
                                 job_config=config, retry=self._retry, timeout=self._timeout)
        batch: list[tuple[Any, ...]] = []
        for row in job.result(page_size=chunk, retry=self._retry, timeout=self._timeout):
            batch.append(tuple(row))
            if len(batch) == chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    def query(self, statement: str, params: Mapping[str, Any] | None = None
              ) -> list[tuple[Any, ...]]:
        """Run a read-only query (tests, summaries); names as `dialect.table` spells them."""
        return [tuple(row) for row in self._run(statement, params)]

    def _watermark(self, name: str, service: str) -> datetime | None:
        value: datetime | None = self._one(
            f"SELECT MAX(recorded_at) FROM {self.dialect.table('analytics_watermarks')}"  # noqa: S608
            " WHERE name = @name AND service = @service", {"name": name, "service": service})
        return value

    def _set_watermark(self, name: str, service: str, recorded_at: datetime) -> None:
        table = self.dialect.table("analytics_watermarks")
        self._run(
            f"MERGE {table} AS t USING (SELECT @name AS name, @service AS service,"  # noqa: S608
            " @at AS recorded_at) AS s ON t.name = s.name AND t.service = s.service"
            " WHEN MATCHED THEN UPDATE SET recorded_at = s.recorded_at"
            " WHEN NOT MATCHED THEN INSERT (name, service, recorded_at)"
            " VALUES (s.name, s.service, s.recorded_at)",
            {"name": name, "service": service, "at": recorded_at})
