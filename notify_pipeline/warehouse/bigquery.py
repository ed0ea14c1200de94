"""The production warehouse: the events table in a BigQuery dataset.

The table is partitioned by day on `occurred_at` and clustered by `service, event_type`, so
per-service and per-type reads scan little. Writes are exact rather than best-effort (streaming
`insertId` dedup is only best-effort): each call loads its batch into its own staging table (a load
job is atomic), one MERGE inserts the rows whose `event_id` the table lacks, and the staging table
is dropped (it also expires by itself if a crash leaves it behind). A retried call adds nothing.

Names are validated before they reach SQL; values travel only as load data. Every API call has a
timeout and a bounded retry.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from google.api_core.exceptions import Conflict
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from notify_pipeline.defaults import BIGQUERY_DATASET
from notify_pipeline.events import EVENT_COLUMNS, Event, utcnow
from notify_pipeline.warehouse.base import Warehouse, service_table

DEFAULT_TABLE = "events"
STAGING_LIFETIME = timedelta(days=1)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")  # a subset of BigQuery's dataset/table names
_PROJECT = re.compile(r"(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


def _field(name: str, kind: str, *, required: bool = False) -> bigquery.SchemaField:
    return bigquery.SchemaField(name, kind, mode="REQUIRED" if required else "NULLABLE")


# The event table contract (docs/events.md): its columns, in EVENT_COLUMNS order.
SCHEMA = (
    _field("event_id", "STRING", required=True),
    _field("service", "STRING"),
    _field("message_id", "STRING"),
    _field("provider_message_id", "STRING"),
    _field("event_type", "STRING", required=True),
    _field("recipient", "STRING"),
    _field("occurred_at", "TIMESTAMP", required=True),
    _field("recorded_at", "TIMESTAMP", required=True),
    _field("bounce_type", "STRING"),
    _field("bounce_subtype", "STRING"),
    _field("reason", "STRING"),
    _field("subject", "STRING"),
    _field("tags", "JSON"),
)


def checked_name(name: str, what: str, pattern: re.Pattern[str] = _NAME) -> str:
    """`name` if it is safe to put in SQL between backticks, else ValueError."""
    if not pattern.fullmatch(name):
        raise ValueError(f"not a valid BigQuery {what} name: {name!r}")
    return name


def _load_row(event: Event, recorded_at: datetime) -> dict[str, Any]:
    """One NDJSON line's fields: timestamps as ISO 8601, tags as an object (a JSON column loads
    a string as a JSON string, not as the object it spells)."""
    row = event.row(recorded_at)
    row["occurred_at"] = row["occurred_at"].isoformat()
    row["recorded_at"] = row["recorded_at"].isoformat()
    row["tags"] = event.tags
    return row


class BigQueryWarehouse(Warehouse):
    """Idempotent writes to `project.dataset.table`; the dataset and table are made on first use."""

    def __init__(
        self,
        client: bigquery.Client,
        *,
        dataset: str = BIGQUERY_DATASET,
        table: str = DEFAULT_TABLE,
        location: str | None = None,
        timeout_seconds: float = 60.0,
        retry_seconds: float = 120.0,
    ) -> None:
        self._client = client
        self._project = checked_name(client.project, "project", _PROJECT)
        self.dataset = checked_name(dataset, "dataset")
        self.table = checked_name(table, "table")
        self._location = location
        self._timeout = timeout_seconds
        self._retry = DEFAULT_RETRY.with_timeout(retry_seconds)
        self._job_retry = DEFAULT_JOB_RETRY.with_timeout(retry_seconds)
        self._ready = False

    @property
    def table_id(self) -> str:
        return self._id(self.table)

    def _id(self, name: str) -> str:
        return f"{self._project}.{self.dataset}.{name}"

    def ensure_table(self) -> None:
        """Create the dataset and the partitioned, clustered events table if missing."""
        if self._ready:
            return
        dataset = bigquery.Dataset(f"{self._project}.{self.dataset}")
        if self._location:  # else the client's default; bqemulator fails on an explicit null
            dataset.location = self._location
        self._client.create_dataset(dataset, exists_ok=True, retry=self._retry,
                                    timeout=self._timeout)
        table = bigquery.Table(self.table_id, schema=list(SCHEMA))
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="occurred_at")
        table.clustering_fields = ["service", "event_type"]
        self._client.create_table(table, exists_ok=True, retry=self._retry,
                                  timeout=self._timeout)
        self._ready = True

    def write_events(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        self.ensure_table()
        stage = self._id(f"_stage_{self.table}_{uuid.uuid4().hex}")
        try:
            self._load(stage, events)
            return self._merge(stage)
        finally:
            self._client.delete_table(stage, not_found_ok=True, retry=self._retry,
                                      timeout=self._timeout)

    def _load(self, stage: str, events: Sequence[Event]) -> None:
        """Load the batch (first of each `event_id`) into a fresh staging table.

        `size=None` makes the client use a resumable upload, which bqemulator accepts; it refuses
        the multipart upload the client picks for small known sizes.
        """
        table = bigquery.Table(stage, schema=list(SCHEMA))
        table.expires = utcnow() + STAGING_LIFETIME
        self._client.create_table(table, retry=self._retry, timeout=self._timeout)
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {}
        for event in events:
            rows.setdefault(event.event_id, _load_row(event, now))
        body = "".join(json.dumps(row) + "\n" for row in rows.values())
        config = bigquery.LoadJobConfig(
            schema=list(SCHEMA),
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        )
        job = self._client.load_table_from_file(
            io.BytesIO(body.encode()), stage, size=None, num_retries=3, job_config=config,
            timeout=self._timeout)
        job.result(retry=self._retry, timeout=self._timeout)

    def _merge(self, stage: str) -> int:
        columns = ", ".join(EVENT_COLUMNS)
        values = ", ".join(f"source.{c}" for c in EVENT_COLUMNS)
        statement = (
            f"MERGE `{self.table_id}` AS target USING `{stage}` AS source"  # noqa: S608
            " ON target.event_id = source.event_id"
            f" WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
        )
        job = self._client.query(statement, retry=self._retry, job_retry=self._job_retry,
                                 timeout=self._timeout)
        job.result(retry=self._retry, timeout=self._timeout)
        return int(job.num_dml_affected_rows or 0)

    def create_service_views(self, service_ids: Sequence[str]) -> None:
        """One view per service over the events table, named as docs/events.md says.

        A view cannot take query parameters; `service_table` has proved the id is `[a-z0-9-]+`.
        """
        self.ensure_table()
        for sid in service_ids:
            view = bigquery.Table(self._id(service_table(sid)))
            view.view_query = (
                f"SELECT * FROM `{self.table_id}` WHERE service = '{sid}'"  # noqa: S608
            )
            self._put_view(view)

    def _put_view(self, view: bigquery.Table) -> None:
        """Create the view, or point an existing one at the current query."""
        try:
            self._client.create_table(view, retry=self._retry, timeout=self._timeout)
        except Conflict:
            self._client.update_table(view, ["view_query"], retry=self._retry,
                                      timeout=self._timeout)
