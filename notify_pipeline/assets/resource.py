"""The analytics resource, and the core objects the analytics assets build from resources."""


from pathlib import Path

import dagster as dg

from notify_pipeline.analytics.bigquery_store import BigQueryAnalytics
from notify_pipeline.analytics.duckdb_store import DuckDBAnalytics
from notify_pipeline.analytics.store import AnalyticsStore
from notify_pipeline.errors import ConfigError
from notify_pipeline.resources import (
    BigQueryWarehouseResource,
    DuckDBWarehouseResource,
    WarehouseResource,
)
from notify_pipeline.warehouse.bigquery import BigQueryWarehouse
from notify_pipeline.warehouse.duckdb import DuckDBWarehouse


class AnalyticsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the analytics write files, how far back exports reach, and (gcp) whether the
    per-service access plan is applied or only shown, and the Shared Drive folder of the
    services' Google Sheets."""

    home: str
    export_days: int = 90
    apply_access: bool = False
    sheets_folder_id: str = ""

    @property
    def exports_dir(self) -> Path:
        return Path(self.home) / "exports"

    @property
    def dns_records_path(self) -> Path:
        return Path(self.home) / "dns-records.json"


def analytics_store(warehouse: WarehouseResource) -> AnalyticsStore:
    """The store for the profile's warehouse."""
    if isinstance(warehouse, DuckDBWarehouseResource):
        return DuckDBAnalytics(DuckDBWarehouse(Path(warehouse.path)))
    if isinstance(warehouse, BigQueryWarehouseResource):
        client = warehouse.bigquery.make_client()
        events = BigQueryWarehouse(client, dataset=warehouse.dataset,
                                   location=warehouse.bigquery.location)
        return BigQueryAnalytics(events, client)
    raise ConfigError("warehouse", f"no analytics store for {type(warehouse).__name__}")
