"""The service's configuration as its technical principals read it: `config_<svc>`.

One table per service in the events dataset (DuckDB: schema `notify_events`), holding one row:
the service's registry entry with every default filled in, as JSON, and the From address it
sends from. The registry holds no secrets (DKIM keys, tokens and passwords live elsewhere and are
never part of a `Service`), so the entry is shown whole. A separate table per service, rather
than a view over one table, is what table-level IAM can grant on: each service's technical
principals read their own service's configuration and nothing else.

The row is rewritten only when the entry changed, and in BigQuery by a truncating load into the
existing table, which keeps the table's IAM policy (replacing the table would drop it).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core.exceptions import Forbidden, GoogleAPICallError, MethodNotAllowed, NotFound
from google.api_core.retry import Retry
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from notify_pipeline.analytics.access import AccessFailure, AccessNotApplied, Grant, add_bindings
from notify_pipeline.policy import Domains
from notify_pipeline.registry import Service
from notify_pipeline.warehouse.duckdb import SCHEMA, DuckDBWarehouse

COLUMNS = ("service", "from_address", "configuration", "updated_at")
SCHEMA_FIELDS = [
    bigquery.SchemaField("service", "STRING", mode="REQUIRED"),
    bigquery.SchemaField("from_address", "STRING"),
    bigquery.SchemaField("configuration", "STRING"),
    bigquery.SchemaField("updated_at", "TIMESTAMP"),
]


def config_table(service_id: str) -> str:
    """`config_<service id with - as _>`, beside the service's `events_<…>` view."""
    return "config_" + service_id.replace("-", "_")


@dataclass(frozen=True)
class ConfigRow:
    service: str
    from_address: str
    configuration: str  # the registry entry as canonical JSON

    @classmethod
    def of(cls, service: Service, domains: Domains) -> ConfigRow:
        domain = service.sending_domain(domains.main, domains.testing)
        entry = json.dumps(service.model_dump(mode="json"), sort_keys=True)
        return cls(service.id, service.from_address(domain=domain), entry)


@dataclass(frozen=True)
class ConfigWrite:
    """Where the row is and whether this write changed it."""

    table: str
    changed: bool


class DuckDBConfigTables:
    """Locally: the table in `notify_events`; there are no principals to grant to."""

    def __init__(self, warehouse: DuckDBWarehouse) -> None:
        self._warehouse = warehouse

    def write(self, row: ConfigRow, now: datetime) -> ConfigWrite:
        table = f"{SCHEMA}.{config_table(row.service)}"
        with self._warehouse.connect() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} (service VARCHAR NOT NULL,"
                        " from_address VARCHAR, configuration JSON, updated_at TIMESTAMPTZ)")
            current = con.execute(f"SELECT service, from_address, configuration::VARCHAR"  # noqa: S608
                                  f" FROM {table}").fetchall()
            if current == [(row.service, row.from_address, row.configuration)]:
                return ConfigWrite(table, changed=False)
            con.execute("BEGIN")
            con.execute(f"DELETE FROM {table}")  # noqa: S608
            con.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?)",  # noqa: S608
                        [row.service, row.from_address, row.configuration, now])
            con.execute("COMMIT")
        return ConfigWrite(table, changed=True)


class BigQueryConfigTables:
    """In gcp: the table in the events dataset, readable by the grants given to `grant`."""

    def __init__(self, client: bigquery.Client, dataset: str, *, timeout_seconds: float = 120.0,
                 retry_seconds: float = 300.0) -> None:
        self._client, self._dataset = client, f"{client.project}.{dataset}"
        self._timeout = timeout_seconds
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_seconds)

    def write(self, row: ConfigRow, now: datetime) -> ConfigWrite:
        table = f"{self._dataset}.{config_table(row.service)}"
        self._client.create_table(bigquery.Table(table, schema=SCHEMA_FIELDS), exists_ok=True,
                                  retry=self._retry, timeout=self._timeout)
        current = [tuple(r) for r in self._client.list_rows(
            table, selected_fields=SCHEMA_FIELDS[:3], retry=self._retry, timeout=self._timeout)]
        if current == [(row.service, row.from_address, row.configuration)]:
            return ConfigWrite(table, changed=False)
        body = json.dumps({"service": row.service, "from_address": row.from_address,
                           "configuration": row.configuration, "updated_at": now.isoformat()})
        config = bigquery.LoadJobConfig(
            schema=SCHEMA_FIELDS, source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
        job = self._client.load_table_from_file(  # size=None: a resumable upload (bqemulator)
            io.BytesIO(body.encode() + b"\n"), table, size=None, num_retries=3,
            job_config=config, timeout=self._timeout)
        job.result(retry=self._retry, timeout=self._timeout)
        return ConfigWrite(table, changed=True)

    def grant(self, table: str, grants: Sequence[Grant]) -> bool:
        """Table-level IAM for the grants, idempotently; True when the policy changed."""
        try:
            policy: Any = self._client.get_iam_policy(table, retry=self._retry,
                                                      timeout=self._timeout)
            if not add_bindings(policy.bindings, grants):
                return False
            self._client.set_iam_policy(table, policy, retry=self._retry, timeout=self._timeout)
        except GoogleAPICallError as exc:
            reason = (AccessFailure.DENIED if isinstance(exc, Forbidden) else
                      AccessFailure.UNSUPPORTED if isinstance(exc, MethodNotAllowed | NotFound)
                      else AccessFailure.FAILED)
            raise AccessNotApplied(reason, f"{table}: HTTP {exc.code}") from exc
        return True
