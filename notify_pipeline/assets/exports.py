"""`sheets_export` (a service's recent events as files, or as a Google Sheet in gcp) and
`dns_records` (the records every sending domain needs)."""


import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from notify_pipeline.analytics.export import write_exports
from notify_pipeline.analytics.sql import EXPORT_COLUMNS
from notify_pipeline.analytics.store import AnalyticsStore
from notify_pipeline.assets.partitions import services
from notify_pipeline.assets.resource import AnalyticsResource, analytics_store
from notify_pipeline.assets.tables import GROUP, registered, service_events
from notify_pipeline.events import utcnow
from notify_pipeline.registry import Service
from notify_pipeline.resources import (
    BigQueryWarehouseResource,
    DeploymentResource,
    RegistryResource,
    SigningResource,
    WarehouseResource,
)
from notify_pipeline.sending_domains import deployment_dns_records


def publish_to_sheets(service: Service, store: AnalyticsStore, since: datetime,
                      folder_id: str) -> dict[str, dg.MetadataValue]:
    """The gcp profile's Google Sheet per service, in the Shared Drive folder `folder_id`,
    shared with the service's reporting principals (the Sheets exporter, gspread)."""
    if not folder_id:
        return {"sheets": dg.MetadataValue.text(
            "not configured: set NOTIFY_SHEETS_FOLDER_ID to a Shared Drive folder id")}
    from notify_pipeline.analytics.sheets import SheetsExporter

    rows = (row for chunk in store.export_rows(service.id, since, newest_first=True)
            for row in chunk)
    result = SheetsExporter.from_application_default(folder_id).export(
        service.id, EXPORT_COLUMNS, rows, share_with=list(service.reporting_principals))
    return {key: _metadata_value(value)
            for key, value in result.as_metadata().items()}


def _metadata_value(value: str | int | bool) -> dg.MetadataValue:
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.text(value)


@dg.asset(partitions_def=services, deps=[service_events], group_name=GROUP,
          kinds={"csv", "xlsx"})
def sheets_export(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                  registry: RegistryResource, analytics: AnalyticsResource
                  ) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The last NOTIFY_EXPORT_DAYS (90) days of the service's events, oldest first, as
    `$NOTIFY_HOME/exports/<svc>/events.csv` and `events.xlsx`, each replaced atomically (in gcp
    also one Google Sheet per service)."""
    service = registered(registry, context.partition_key)
    since = utcnow() - timedelta(days=analytics.export_days)
    store = analytics_store(warehouse)
    chunks = store.export_rows(service.id, since)
    result = write_exports(analytics.exports_dir / service.id, EXPORT_COLUMNS, chunks)
    metadata: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "csv": dg.MetadataValue.path(str(result.csv_path)),
        "xlsx": dg.MetadataValue.path(str(result.xlsx_path)),
        "xlsx_rows": dg.MetadataValue.int(result.xlsx_rows),
        "since": dg.MetadataValue.timestamp(since),
    }
    if result.xlsx_truncated:
        context.log.warning(f"{service.id}: events.xlsx holds {result.xlsx_rows} of"
                            f" {result.rows} rows (a worksheet's limit); events.csv has all")
    if isinstance(warehouse, BigQueryWarehouseResource):
        metadata.update(publish_to_sheets(service, store, since, analytics.sheets_folder_id))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name=GROUP, kinds={"dns"})
def dns_records(deployment: DeploymentResource, registry: RegistryResource,
                signing: SigningResource, analytics: AnalyticsResource
                ) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The SPF, DKIM and DMARC records every sending domain needs, as metadata and as
    `$NOTIFY_HOME/dns-records.json` (the same JSON as `notify dns-records`)."""
    records = deployment_dns_records(
        main=deployment.domain, testing=deployment.testing_domain, registry=registry.load(),
        keys=signing.key_ring(), via_ses=deployment.via_ses)
    _write_atomically(analytics.dns_records_path, json.dumps(records, indent=2) + "\n")
    table = "\n".join(f"| {r['name']} | {r['type']} | `{r['value'][:80]}` |" for r in records)
    return dg.MaterializeResult(metadata={
        "records": dg.MetadataValue.json(records),
        "table": dg.MetadataValue.md("| name | type | value |\n|---|---|---|\n" + table),
        "path": dg.MetadataValue.path(str(analytics.dns_records_path)),
        "record_count": dg.MetadataValue.int(len(records)),
    })


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o644)  # public records; mkstemp makes files private
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(path)
    finally:
        Path(tmp).unlink(missing_ok=True)
